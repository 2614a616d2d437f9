//! `template.yaml`'s security properties, read as CloudFormation reads them: the WAF rules and
//! the body-size override, the WAF on every internet-facing entry point, header redaction in WAF
//! logs, the TLS policies, a private and encrypted database behind a TLS-only proxy, encrypted
//! and private buckets, least-privilege IAM (the Bedrock grant equal to the model catalog), a
//! network with endpoints and no NAT, the streaming ingress (API Gateway response streaming in
//! front of the chat-stream function), timeouts that outlast the settlement margin, and the
//! migrations resource in step with `migrations/`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use llmlite::catalog::ModelCatalog;
use llmlite_tests::template;
use serde_json::{Value, json};

fn resources() -> serde_json::Map<String, Value> {
    template()["Resources"].as_object().unwrap().clone()
}

/// The resources of one type, by logical id.
fn of_type(kind: &str) -> Vec<(String, Value)> {
    resources()
        .into_iter()
        .filter(|(_, r)| r["Type"] == kind)
        .collect()
}

fn resource(id: &str) -> Value {
    let r = resources().get(id).cloned();
    r.unwrap_or_else(|| panic!("template.yaml has no resource {id}"))
}

fn props(id: &str) -> Value {
    resource(id)["Properties"].clone()
}

fn reference(id: &str) -> Value {
    json!({ "Ref": id })
}

#[test]
fn the_waf_runs_the_five_rules_in_order_and_counts_large_bodies() {
    let acl = props("WebAcl");
    assert_eq!(acl["Scope"], "REGIONAL");
    assert_eq!(acl["DefaultAction"], json!({"Allow": {}}));
    let rules = acl["Rules"].as_array().unwrap();
    assert_eq!(rules.len(), 5, "{rules:#?}");

    let managed = |rule: &Value| rule["Statement"]["ManagedRuleGroupStatement"].clone();
    let priorities: Vec<i64> = rules[..4]
        .iter()
        .map(|r| r["Priority"].as_i64().unwrap())
        .collect();
    assert_eq!(priorities, [1, 2, 3, 4]);
    for (rule, group) in rules[..3].iter().zip([
        "AWSManagedRulesAmazonIpReputationList",
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
    ]) {
        assert_eq!(managed(rule)["VendorName"], "AWS");
        assert_eq!(managed(rule)["Name"], group);
        // The groups' own actions apply (no group-wide Count).
        assert_eq!(rule["OverrideAction"], json!({"None": {}}), "{group}");
    }
    // WAF sees only the first 8 KB of an ALB body: the size rule would block every long prompt.
    assert_eq!(
        managed(&rules[1])["RuleActionOverrides"],
        json!([{"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}}])
    );

    let rate = &rules[3];
    assert_eq!(rate["Action"], json!({"Block": {}}));
    let statement = &rate["Statement"]["RateBasedStatement"];
    assert_eq!(statement["Limit"], 2000);
    assert_eq!(statement["AggregateKeyType"], "IP");
    assert_eq!(statement["EvaluationWindowSec"], 300);

    // Geo blocking only when countries are given.
    let geo = &rules[4]["Fn::If"];
    assert_eq!(geo[0], "GeoBlocking");
    assert_eq!(geo[1]["Priority"], 5);
    assert_eq!(geo[1]["Action"], json!({"Block": {}}));
    assert_eq!(
        geo[1]["Statement"]["GeoMatchStatement"]["CountryCodes"],
        reference("BlockedCountries")
    );
    assert_eq!(geo[2], reference("AWS::NoValue"));

    let association = props("WebAclAssociation");
    assert_eq!(association["ResourceArn"], reference("LoadBalancer"));
    assert_eq!(
        association["WebACLArn"],
        json!({"Fn::GetAtt": "WebAcl.Arn"})
    );
}

#[test]
fn waf_logs_go_to_an_aws_waf_logs_group_with_the_authorization_header_redacted() {
    let logging = props("WafLogging");
    assert_eq!(logging["ResourceArn"], json!({"Fn::GetAtt": "WebAcl.Arn"}));
    assert_eq!(
        logging["LogDestinationConfigs"],
        json!([{"Fn::GetAtt": "WafLogGroup.Arn"}])
    );
    // Both headers a key can arrive in.
    for header in ["authorization", "x-api-key"] {
        assert!(
            logging["RedactedFields"]
                .as_array()
                .unwrap()
                .contains(&json!({"SingleHeader": {"Name": header}})),
            "{header}: {logging}"
        );
    }
    // The ALB appends the peer to X-Forwarded-For, which the audit trail's client_ip reads last.
    let attributes = props("LoadBalancer")["LoadBalancerAttributes"].clone();
    assert!(
        attributes.as_array().unwrap().contains(
            &json!({"Key": "routing.http.xff_header_processing.mode", "Value": "append"})
        ),
        "{attributes}"
    );
    let group = props("WafLogGroup");
    assert!(
        group["LogGroupName"]
            .as_str()
            .unwrap()
            .starts_with("aws-waf-logs-")
    );
    assert_eq!(group["KmsKeyId"], json!({"Fn::GetAtt": "Key.Arn"}));
}

#[test]
fn the_alb_waits_as_long_as_the_chat_function_may_run() {
    let alb = props("LoadBalancer");
    let idle: u64 = alb["LoadBalancerAttributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["Key"] == "idle_timeout.timeout_seconds")
        .expect("the ALB's idle timeout is set, not left at 60 s")["Value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let chat = props("ChatFunction")["Timeout"].as_u64().unwrap();
    assert!(
        idle >= chat,
        "ALB idle timeout {idle} s < chat timeout {chat} s"
    );
    assert_eq!(chat, 900, "long answers get Lambda's maximum");
}

#[test]
fn the_alb_speaks_tls_1_3_policy_and_redirects_http() {
    let alb = props("LoadBalancer");
    assert_eq!(alb["Scheme"], "internet-facing");
    assert!(alb["LoadBalancerAttributes"].as_array().unwrap().contains(
        &json!({"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"})
    ));
    let listeners = of_type("AWS::ElasticLoadBalancingV2::Listener");
    assert_eq!(listeners.len(), 2);
    let https = props("HttpsListener");
    assert_eq!(https["Protocol"], "HTTPS");
    assert_eq!(https["Port"], 443);
    assert_eq!(https["SslPolicy"], "ELBSecurityPolicy-TLS13-1-2-2021-06");
    assert_eq!(
        https["Certificates"],
        json!([{"CertificateArn": reference("CertificateArn")}])
    );
    let http = props("HttpListener");
    assert_eq!(http["Port"], 80);
    assert_eq!(
        http["DefaultActions"],
        json!([{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}]),
        "port 80 does nothing but redirect"
    );
    // Every target group: one Lambda, single-value headers (documented in the template).
    for (id, group) in of_type("AWS::ElasticLoadBalancingV2::TargetGroup") {
        let p = &group["Properties"];
        assert_eq!(p["TargetType"], "lambda", "{id}");
        assert_eq!(
            p["TargetGroupAttributes"],
            json!([{"Key": "lambda.multi_value_headers.enabled", "Value": "false"}]),
            "{id}"
        );
    }
    // Who may invoke a function: the ALB's target groups, and the streaming API (checked in
    // the_streaming_api_streams_every_method_from_the_chat_stream_function); nobody else.
    for (id, permission) in of_type("AWS::Lambda::Permission") {
        let p = &permission["Properties"];
        assert_eq!(p["Action"], "lambda:InvokeFunction", "{id}");
        assert!(p["SourceArn"].is_object(), "{id} names no source");
        match p["Principal"].as_str() {
            Some("elasticloadbalancing.amazonaws.com") => {}
            Some("apigateway.amazonaws.com") => assert_eq!(id, "ChatStreamApiPermission"),
            other => panic!("{id} lets {other:?} invoke a function"),
        }
    }
}

#[test]
fn the_database_is_private_encrypted_multi_az_and_behind_a_tls_only_iam_proxy() {
    let db = props("Database");
    assert_eq!(db["PubliclyAccessible"], false);
    assert_eq!(db["StorageEncrypted"], true);
    assert_eq!(db["KmsKeyId"], reference("Key"));
    assert_eq!(db["MultiAZ"], true);
    assert_eq!(db["Engine"], "postgres");
    assert!(db["EngineVersion"].as_str().unwrap().starts_with("15."));
    assert_eq!(db["BackupRetentionPeriod"], 7);
    assert_eq!(db["EnablePerformanceInsights"], true);
    assert_eq!(db["DeletionProtection"], reference("DeletionProtection"));
    assert_eq!(
        db["VPCSecurityGroups"],
        json!([reference("DatabaseSecurityGroup")])
    );
    // Only the proxy reaches the database.
    assert_eq!(
        props("DatabaseSecurityGroup")["SecurityGroupIngress"],
        json!([{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
                "SourceSecurityGroupId": reference("ProxySecurityGroup"),
                "Description": "PostgreSQL from RDS Proxy"}])
    );

    let proxy = props("DatabaseProxy");
    assert_eq!(proxy["RequireTLS"], true);
    assert_eq!(proxy["EngineFamily"], "POSTGRESQL");
    let auth = proxy["Auth"].as_array().unwrap();
    assert!(auth.iter().all(|a| a["IAMAuth"] == "REQUIRED"), "{auth:?}");
    assert_eq!(
        props("ProxySecurityGroup")["SecurityGroupIngress"][0]["SourceSecurityGroupId"],
        reference("FunctionSecurityGroup")
    );

    // The functions log in as the user in the proxy's secret, with TLS verified.
    let url =
        template()["Globals"]["Function"]["Environment"]["Variables"]["DATABASE_URL"]["Fn::Sub"]
            .as_str()
            .unwrap()
            .to_owned();
    let secret = props("DatabaseSecret")["GenerateSecretString"]["SecretStringTemplate"]
        .as_str()
        .map(|s| serde_json::from_str::<Value>(s).unwrap())
        .unwrap();
    let user = secret["username"].as_str().unwrap();
    assert!(url.starts_with(&format!(
        "postgres://{user}@${{DatabaseProxy.Endpoint}}:5432/"
    )));
    assert!(url.ends_with("?sslmode=verify-full"), "{url}");
    let connect = statement("FunctionPolicy", "DatabaseThroughProxy");
    assert_eq!(connect["Action"], "rds-db:connect");
    assert!(
        connect["Resource"]["Fn::Sub"][0]
            .as_str()
            .unwrap()
            .ends_with(&format!(":dbuser:${{ProxyId}}/{user}")),
        "{connect}"
    );
}

#[test]
fn every_bucket_is_encrypted_private_and_tls_only() {
    let buckets = of_type("AWS::S3::Bucket");
    assert_eq!(buckets.len(), 3);
    let policies = of_type("AWS::S3::BucketPolicy");
    for (id, bucket) in &buckets {
        let p = &bucket["Properties"];
        assert_eq!(
            p["PublicAccessBlockConfiguration"],
            json!({"BlockPublicAcls": true, "BlockPublicPolicy": true,
                   "IgnorePublicAcls": true, "RestrictPublicBuckets": true}),
            "{id}"
        );
        let sse = &p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"];
        if id == "AccessLogBucket" {
            // ALB access logs can only be delivered to SSE-S3 buckets.
            assert_eq!(sse["SSEAlgorithm"], "AES256", "{id}");
        } else {
            assert_eq!(sse["SSEAlgorithm"], "aws:kms", "{id}");
            assert_eq!(
                sse["KMSMasterKeyID"],
                json!({"Fn::GetAtt": "Key.Arn"}),
                "{id}"
            );
        }
        let policy = policies
            .iter()
            .find(|(_, p)| p["Properties"]["Bucket"] == reference(id))
            .unwrap_or_else(|| panic!("{id} has no bucket policy"));
        let statements = policy.1["Properties"]["PolicyDocument"]["Statement"]
            .as_array()
            .unwrap();
        assert!(
            statements.iter().any(|s| s["Effect"] == "Deny"
                && s["Principal"] == "*"
                && s["Action"] == "s3:*"
                && s["Condition"] == json!({"Bool": {"aws:SecureTransport": "false"}})),
            "{id} is not TLS-only"
        );
    }

    let audit = props("AuditBucket");
    assert_eq!(audit["VersioningConfiguration"]["Status"], "Enabled");
    assert_eq!(audit["ObjectLockEnabled"], true);
    let rule = &audit["LifecycleConfiguration"]["Rules"][0];
    assert_eq!(
        rule["Transitions"],
        json!([{"StorageClass": "GLACIER", "TransitionInDays": 90}])
    );
    assert_eq!(rule["ExpirationInDays"], 7 * 365);
}

/// Every statement of every IAM policy the template writes (roles, managed policies, inline
/// function policies), with where it came from.
fn iam_statements() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut push = |id: &str, document: &Value| {
        for s in document["Statement"].as_array().into_iter().flatten() {
            out.push((id.to_owned(), s.clone()));
        }
    };
    for (id, r) in resources() {
        let p = &r["Properties"];
        match r["Type"].as_str().unwrap() {
            "AWS::IAM::ManagedPolicy" => push(&id, &p["PolicyDocument"]),
            "AWS::IAM::Role" => {
                for policy in p["Policies"].as_array().into_iter().flatten() {
                    push(&id, &policy["PolicyDocument"]);
                }
            }
            "AWS::Serverless::Function" => {
                for policy in p["Policies"].as_array().into_iter().flatten() {
                    if policy.get("Statement").is_some() {
                        push(&id, policy);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn statement(policy: &str, sid: &str) -> Value {
    let statements = props(policy)["PolicyDocument"]["Statement"].clone();
    statements
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == sid)
        .cloned()
        .unwrap_or_else(|| panic!("{policy} has no statement {sid}"))
}

fn actions(statement: &Value) -> Vec<String> {
    match &statement["Action"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(all) => all.iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
        other => panic!("unexpected Action {other}"),
    }
}

/// The IAM statements with an action of the service `prefix` (`"s3:"`).
fn statements_for(prefix: &str) -> Vec<(String, Value)> {
    iam_statements()
        .into_iter()
        .filter(|(_, s)| actions(s).iter().any(|a| a.starts_with(prefix)))
        .collect()
}

#[test]
fn no_iam_statement_grants_every_resource() {
    let statements = iam_statements();
    assert!(statements.len() >= 7, "{statements:#?}");
    for (id, s) in &statements {
        let resource = &s["Resource"];
        let wildcard = resource == "*"
            || resource
                .as_array()
                .is_some_and(|all| all.iter().any(|r| r == "*"));
        assert!(!wildcard, "{id}: {s}");
        assert_eq!(s["Effect"], "Allow", "{id}: {s}");
    }
}

#[test]
fn bedrock_may_be_invoked_only_on_the_catalogs_profiles_and_models() {
    let bedrock = statements_for("bedrock:");
    assert_eq!(bedrock.len(), 1, "{bedrock:#?}");
    let (owner, grant) = &bedrock[0];
    assert_eq!(
        owner, "BedrockPolicy",
        "one grant, shared by the chat functions"
    );
    // Only the two chat functions (buffered and streamed) call Bedrock.
    let holders: BTreeSet<String> = of_type("AWS::Serverless::Function")
        .into_iter()
        .filter(|(_, f)| {
            f["Properties"]["Policies"]
                .as_array()
                .is_some_and(|all| all.contains(&reference("BedrockPolicy")))
        })
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        holders,
        ["ChatFunction", "ChatStreamFunction"]
            .map(str::to_owned)
            .into()
    );
    assert_eq!(
        actions(grant),
        [
            "bedrock:InvokeModel",
            "bedrock:InvokeModelWithResponseStream",
            "bedrock:CountTokens"
        ]
    );
    let granted: BTreeSet<String> = grant["Resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Fn::Sub"].as_str().unwrap().to_owned())
        .collect();

    let mut expected = BTreeSet::new();
    for model in ModelCatalog::builtin().unwrap().models() {
        let id = &model.bedrock_model_id;
        let (geo, foundation) = id.split_once('.').unwrap();
        // A cross-region profile routes to its geography's regions; add others here when the
        // catalog gains them.
        let regions = match geo {
            "eu" => "eu-*",
            other => panic!("{id}: no IAM region pattern for `{other}.` profiles yet"),
        };
        expected.insert(format!(
            "arn:${{AWS::Partition}}:bedrock:${{AWS::Region}}:${{AWS::AccountId}}:inference-profile/{id}"
        ));
        expected.insert(format!(
            "arn:${{AWS::Partition}}:bedrock:{regions}::foundation-model/{foundation}"
        ));
    }
    assert_eq!(granted, expected);
}

#[test]
fn objects_are_written_only_under_the_audit_report_and_outbox_prefixes() {
    let grants = statements_for("s3:");
    assert_eq!(grants.len(), 3, "{grants:#?}");
    let by_actions = |wanted: &[&str]| {
        grants
            .iter()
            .map(|(_, s)| s)
            .find(|s| {
                actions(s)
                    .iter()
                    .map(String::as_str)
                    .eq(wanted.iter().copied())
            })
            .unwrap_or_else(|| panic!("no statement with {wanted:?}: {grants:#?}"))
    };
    // Records and reports: written, never read back or removed.
    assert_eq!(
        by_actions(&["s3:PutObject"])["Resource"],
        json!([{"Fn::Sub": "${AuditBucket.Arn}/audit/*"}, {"Fn::Sub": "${ReportsBucket.Arn}/reports/*"}])
    );
    // The settlement outbox: its own prefix only, listed only there.
    assert_eq!(
        by_actions(&["s3:PutObject", "s3:GetObject", "s3:DeleteObject"])["Resource"],
        json!({"Fn::Sub": "${AuditBucket.Arn}/settlements/*"})
    );
    let list = by_actions(&["s3:ListBucket"]);
    assert_eq!(list["Resource"], json!({"Fn::GetAtt": "AuditBucket.Arn"}));
    assert_eq!(
        list["Condition"],
        json!({"StringLike": {"s3:prefix": "settlements/*"}})
    );
    assert_eq!(
        llmlite::settlement::OUTBOX_PREFIX,
        "settlements/pending/",
        "the prefix the code uses is inside the granted one"
    );
}

fn cidr(text: &str) -> (u32, u32) {
    let (addr, len) = text.split_once('/').unwrap();
    let addr = u32::from(addr.parse::<Ipv4Addr>().unwrap());
    let len: u32 = len.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    (addr & mask, mask)
}

#[test]
fn every_subnet_is_inside_the_vpc_and_there_is_no_nat() {
    let (vpc, vpc_mask) = cidr(props("Vpc")["CidrBlock"].as_str().unwrap());
    assert_eq!((vpc, vpc_mask), cidr("10.1.0.0/20"));
    let subnets = of_type("AWS::EC2::Subnet");
    assert_eq!(subnets.len(), 6);
    for (id, subnet) in &subnets {
        let block = subnet["Properties"]["CidrBlock"].as_str().unwrap();
        let (net, mask) = cidr(block);
        assert!(
            mask >= vpc_mask && net & vpc_mask == vpc,
            "{id} {block} is outside the VPC"
        );
    }
    assert_eq!(props("DatabaseSubnetA")["CidrBlock"], "10.1.13.0/24");
    assert_eq!(props("DatabaseSubnetB")["CidrBlock"], "10.1.14.0/24");
    assert!(of_type("AWS::EC2::NatGateway").is_empty());
    assert!(of_type("AWS::EC2::EIP").is_empty());

    let endpoints: BTreeSet<(String, String)> = of_type("AWS::EC2::VPCEndpoint")
        .into_iter()
        .map(|(_, e)| {
            let p = &e["Properties"];
            let service = p["ServiceName"]["Fn::Sub"].as_str().unwrap();
            (
                service
                    .trim_start_matches("com.amazonaws.${AWS::Region}.")
                    .to_owned(),
                p["VpcEndpointType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("bedrock-runtime", "Interface"),
        ("secretsmanager", "Interface"),
        ("logs", "Interface"),
        ("kms", "Interface"),
        ("s3", "Gateway"),
    ]
    .into_iter()
    .map(|(s, t)| (s.to_owned(), t.to_owned()))
    .collect();
    assert_eq!(endpoints, expected);
}

#[test]
fn the_functions_are_arm64_rust_in_the_vpc_with_encrypted_environment_and_logs() {
    let globals = &template()["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Handler"], "bootstrap");
    assert_eq!(globals["Architectures"], json!(["arm64"]));
    assert_eq!(globals["KmsKeyArn"], json!({"Fn::GetAtt": "Key.Arn"}));
    assert_eq!(
        globals["VpcConfig"]["SubnetIds"],
        json!([reference("PrivateSubnetA"), reference("PrivateSubnetB")])
    );
    let functions = of_type("AWS::Serverless::Function");
    let binaries: BTreeSet<String> = functions
        .iter()
        .map(|(id, f)| {
            assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda", "{id}");
            for key in ["Runtime", "Architectures", "VpcConfig", "KmsKeyArn"] {
                assert!(f["Properties"].get(key).is_none(), "{id} overrides {key}");
            }
            f["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        binaries,
        ["chat", "chat-stream", "health", "key-admin", "spend-rollup"]
            .map(str::to_owned)
            .into()
    );
    assert_eq!(
        props("ChatFunction")["ReservedConcurrentExecutions"],
        reference("ChatReservedConcurrency")
    );
    // The streamed chat function is the chat function but for its binary and its reservation.
    let (chat, stream) = (props("ChatFunction"), props("ChatStreamFunction"));
    assert_eq!(
        stream["ReservedConcurrentExecutions"],
        reference("ChatStreamReservedConcurrency")
    );
    for key in [
        "MemorySize",
        "Timeout",
        "Environment",
        "Policies",
        "VpcConfig",
    ] {
        assert_eq!(chat[key], stream[key], "ChatStreamFunction's {key}");
    }
    // One log group each, with retention and the key, which the function logs to (so the
    // function is created after it).
    for (id, function) in &functions {
        let group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{id} names no log group"));
        let group = props(group);
        assert_eq!(
            group["RetentionInDays"],
            reference("LogRetentionDays"),
            "{id}"
        );
        assert_eq!(group["KmsKeyId"], json!({"Fn::GetAtt": "Key.Arn"}), "{id}");
    }
}

#[test]
fn the_migrations_resource_names_the_newest_migration_and_gates_the_http_functions() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
    let newest = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .max()
        .unwrap();

    let migrations = resource("DatabaseMigrations");
    assert_eq!(migrations["Type"], "Custom::DatabaseMigrations");
    let p = &migrations["Properties"];
    assert_eq!(
        p["ServiceToken"],
        json!({"Fn::GetAtt": "SpendRollupFunction.Arn"})
    );
    assert_eq!(
        p["LatestMigration"], newest,
        "a new migration needs its name in template.yaml, or deploys will not apply it"
    );
    for function in [
        "ChatFunction",
        "ChatStreamFunction",
        "KeyAdminFunction",
        "HealthFunction",
    ] {
        assert_eq!(
            resource(function)["DependsOn"],
            "DatabaseMigrations",
            "{function}"
        );
    }
    // The fixture replays the same request.
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../events/spend-rollup-migrate.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(fixture["ResourceProperties"]["LatestMigration"], newest);
    assert_eq!(fixture["LogicalResourceId"], "DatabaseMigrations");
}

#[test]
fn the_generated_master_key_secret_has_the_shape_the_functions_read() {
    // llmlite::config reads `{"master_key_suffix": s}` as the key `sk-{s}`.
    let secret = props("MasterKeySecret");
    assert_eq!(secret["KmsKeyId"], reference("Key"));
    let generate = &secret["GenerateSecretString"];
    assert_eq!(generate["GenerateStringKey"], "master_key_suffix");
    assert_eq!(generate["ExcludePunctuation"], true);
    assert!(generate["PasswordLength"].as_u64().unwrap() >= 32);
    assert_eq!(
        template()["Globals"]["Function"]["Environment"]["Variables"]["LITELLM_MASTER_KEY_SECRET_ARN"],
        reference("MasterKeySecret")
    );
}

#[test]
fn the_key_rotates_and_every_log_group_and_secret_uses_it() {
    let key = props("Key");
    assert_eq!(key["EnableKeyRotation"], true);
    let statements = key["KeyPolicy"]["Statement"].as_array().unwrap();
    assert!(
        statements.iter().any(|s| s["Principal"]["Service"]
            == json!({"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"})),
        "CloudWatch Logs cannot use the key"
    );
    for (id, group) in of_type("AWS::Logs::LogGroup") {
        assert_eq!(
            group["Properties"]["KmsKeyId"],
            json!({"Fn::GetAtt": "Key.Arn"}),
            "{id}"
        );
    }
    for (id, secret) in of_type("AWS::SecretsManager::Secret") {
        assert_eq!(secret["Properties"]["KmsKeyId"], reference("Key"), "{id}");
    }
    assert_eq!(
        props("RollupDeadLetterQueue")["KmsMasterKeyId"],
        reference("Key")
    );
}

/// The logical ids a resource waits for through `DependsOn` (a string or a list).
fn depends_on(id: &str) -> BTreeSet<String> {
    match &resource(id)["DependsOn"] {
        Value::Null => BTreeSet::new(),
        Value::String(one) => [one.clone()].into(),
        Value::Array(all) => all.iter().map(|d| d.as_str().unwrap().to_owned()).collect(),
        other => panic!("{id}: unexpected DependsOn {other}"),
    }
}

/// The resources of one type that belong to the REST API `api` (`RestApiId: !Ref api`).
fn of_rest_api(kind: &str, api: &str) -> Vec<(String, Value)> {
    of_type(kind)
        .into_iter()
        .filter(|(_, r)| r["Properties"]["RestApiId"] == reference(api))
        .collect()
}

/// The path of an `AWS::ApiGateway::Resource` of `api`, from the root (`/v1/{proxy+}`).
fn rest_path(api: &str, id: &str) -> String {
    let p = props(id);
    assert_eq!(p["RestApiId"], reference(api), "{id}");
    let part = p["PathPart"].as_str().unwrap();
    let root = json!({ "Fn::GetAtt": format!("{api}.RootResourceId") });
    if p["ParentId"] == root {
        format!("/{part}")
    } else {
        let parent = p["ParentId"]["Ref"].as_str().unwrap();
        format!("{}/{part}", rest_path(api, parent))
    }
}

#[test]
fn the_streaming_api_streams_every_method_from_the_chat_stream_function() {
    let methods = of_rest_api("AWS::ApiGateway::Method", "StreamingApi");
    assert!(!methods.is_empty());
    assert_eq!(
        methods.len(),
        of_type("AWS::ApiGateway::Method").len(),
        "every method belongs to StreamingApi"
    );
    let timeout_ms = props("ChatStreamFunction")["Timeout"].as_u64().unwrap() * 1000;
    for (id, method) in &methods {
        let p = &method["Properties"];
        assert_eq!(p["HttpMethod"], "ANY", "{id}");
        let integration = &p["Integration"];
        assert_eq!(integration["Type"], "AWS_PROXY", "{id}");
        // A Lambda proxy integration always POSTs to Lambda's API, whatever the client's method.
        assert_eq!(integration["IntegrationHttpMethod"], "POST", "{id}");
        assert_eq!(integration["ResponseTransferMode"], "STREAM", "{id}");
        // Lambda's InvokeWithResponseStream (API version 2021-11-15), on the streaming function.
        assert_eq!(
            integration["Uri"],
            json!({"Fn::Sub": "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2021-11-15/functions/${ChatStreamFunction.Arn}/response-streaming-invocations"}),
            "{id}"
        );
        // The integration waits as long as the function may run, and at most the 15 minutes a
        // streamed response may last.
        let integration_ms = integration["TimeoutInMillis"].as_u64().unwrap();
        assert!(
            (timeout_ms..=900_000).contains(&integration_ms),
            "{id}: integration timeout {integration_ms} ms, function timeout {timeout_ms} ms"
        );
    }

    // API Gateway may invoke the function from this API only.
    let permission = props("ChatStreamApiPermission");
    assert_eq!(
        permission["FunctionName"],
        json!({"Fn::GetAtt": "ChatStreamFunction.Arn"})
    );
    // lambda:InvokeFunction also authorizes InvokeWithResponseStream.
    assert_eq!(permission["Action"], "lambda:InvokeFunction");
    assert_eq!(permission["Principal"], "apigateway.amazonaws.com");
    assert_eq!(
        permission["SourceArn"],
        json!({"Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${StreamingApi}/*"})
    );
}

#[test]
fn the_streaming_apis_paths_are_the_chat_functions_alb_patterns() {
    use llmlite::routes::{ALB_PATH_PATTERNS, Function};
    // `{proxy+}` is one or more path segments, the ALB's `*` any characters: `/v1/{proxy+}`
    // serves what `/v1/*` does (but the bare `/v1/`, which no route answers anyway).
    let from_template: BTreeSet<String> = of_rest_api("AWS::ApiGateway::Method", "StreamingApi")
        .into_iter()
        .map(|(id, m)| {
            let resource = m["Properties"]["ResourceId"]["Ref"]
                .as_str()
                .unwrap_or_else(|| panic!("{id} is not on a resource of its own"));
            let path = rest_path("StreamingApi", resource);
            match path.strip_suffix("/{proxy+}") {
                Some(prefix) => format!("{prefix}/*"),
                None => path,
            }
        })
        .collect();
    let from_code: BTreeSet<String> = ALB_PATH_PATTERNS
        .iter()
        .filter(|(_, function)| *function == Function::Chat)
        .map(|(pattern, _)| (*pattern).to_owned())
        .collect();
    assert_eq!(from_template, from_code);
}

#[test]
fn the_streaming_stage_serves_a_deployment_of_every_method_and_logs_access() {
    let deployments = of_type("AWS::ApiGateway::Deployment");
    assert_eq!(deployments.len(), 1, "{deployments:#?}");
    let (deployment, d) = &deployments[0];
    // A deployment created before a method would not contain it (and CloudFormation would not
    // redeploy later): it waits for every method and gateway response.
    let waits_for = depends_on(deployment);
    for kind in [
        "AWS::ApiGateway::Method",
        "AWS::ApiGateway::GatewayResponse",
    ] {
        for (id, _) in of_rest_api(kind, "StreamingApi") {
            assert!(
                waits_for.contains(&id),
                "{deployment} does not wait for {id}"
            );
        }
    }
    // The stage is its own resource (a StageName here would make a second, unmanaged stage).
    assert!(d["Properties"].get("StageName").is_none());
    assert_eq!(d["Properties"]["RestApiId"], reference("StreamingApi"));

    let stages = of_type("AWS::ApiGateway::Stage");
    assert_eq!(stages.len(), 1);
    let stage = props("StreamingStage");
    assert_eq!(stage["RestApiId"], reference("StreamingApi"));
    assert_eq!(stage["DeploymentId"], reference(deployment));
    assert_eq!(stage["CacheClusterEnabled"], false);
    let access = &stage["AccessLogSetting"];
    assert_eq!(
        access["DestinationArn"],
        json!({"Fn::GetAtt": "StreamingAccessLogGroup.Arn"})
    );
    let format: Value = serde_json::from_str(access["Format"].as_str().unwrap())
        .expect("the access log format is one JSON object");
    assert_eq!(format["requestId"], "$context.requestId");
    let group = props("StreamingAccessLogGroup");
    assert_eq!(group["RetentionInDays"], reference("LogRetentionDays"));
    assert_eq!(group["KmsKeyId"], json!({"Fn::GetAtt": "Key.Arn"}));
    // Access logging to CloudWatch needs the account's logging role first.
    assert!(depends_on("StreamingStage").contains("ApiGatewayAccount"));
    assert_eq!(
        props("ApiGatewayAccount")["CloudWatchRoleArn"],
        json!({"Fn::GetAtt": "ApiGatewayLogsRole.Arn"})
    );

    let settings = stage["MethodSettings"].as_array().unwrap();
    assert_eq!(settings.len(), 1);
    let all = &settings[0];
    assert_eq!(
        (&all["ResourcePath"], &all["HttpMethod"]),
        (&json!("/*"), &json!("*"))
    );
    assert_eq!(all["MetricsEnabled"], true);
    assert_eq!(all["CachingEnabled"], false);
    // Execution logs would land in a group API Gateway makes: unencrypted, kept forever.
    assert_eq!(all["LoggingLevel"], "OFF");
    assert_eq!(all["DataTraceEnabled"], false);
    assert!(all["ThrottlingRateLimit"].as_f64().unwrap() > 0.0);
    assert!(all["ThrottlingBurstLimit"].as_u64().unwrap() > 0);

    // The stage answers at the root of the streaming host name.
    let mapping = props("StreamingBasePathMapping");
    assert_eq!(mapping["DomainName"], reference("StreamingDomain"));
    assert_eq!(mapping["RestApiId"], reference("StreamingApi"));
    assert_eq!(mapping["Stage"], reference("StreamingStage"));
    assert!(mapping.get("BasePath").is_none(), "{mapping}");
    let outputs = &template()["Outputs"];
    assert_eq!(
        outputs["StreamingBaseUrl"]["Value"],
        json!({"Fn::Sub": "https://${StreamingDomainName}/v1"})
    );
    assert_eq!(
        outputs["StreamingDnsTarget"]["Value"],
        json!({"Fn::GetAtt": "StreamingDomain.RegionalDomainName"})
    );
    assert!(outputs["GatewayUrl"].is_object(), "the ALB's output stays");
}

#[test]
fn the_streaming_entry_point_speaks_tls_1_2_or_later_on_its_own_domain_only() {
    let api = props("StreamingApi");
    assert_eq!(api["EndpointConfiguration"], json!({"Types": ["REGIONAL"]}));
    // The execute-api host answers 403: clients must use the custom domain.
    assert_eq!(api["DisableExecuteApiEndpoint"], true);
    assert_eq!(api["SecurityPolicy"], "TLS_1_2");
    let domain = props("StreamingDomain");
    assert_eq!(domain["DomainName"], reference("StreamingDomainName"));
    assert_eq!(
        domain["RegionalCertificateArn"],
        reference("StreamingCertificateArn")
    );
    assert_eq!(
        domain["EndpointConfiguration"],
        json!({"Types": ["REGIONAL"]})
    );
    assert_eq!(domain["SecurityPolicy"], "TLS_1_2");
    // And the ALB's listener (the_alb_speaks_tls_1_3_policy_and_redirects_http).
    assert_eq!(
        props("HttpsListener")["SslPolicy"],
        "ELBSecurityPolicy-TLS13-1-2-2021-06"
    );
}

#[test]
fn every_internet_facing_entry_point_carries_the_web_acl() {
    let acls = of_type("AWS::WAFv2::WebACL");
    assert_eq!(acls.len(), 1, "one WebACL");
    assert_eq!(acls[0].0, "WebAcl");

    // What the associations protect, as the ResourceArn each must name.
    let mut entry_points: Vec<(String, Value)> = Vec::new();
    for (id, lb) in of_type("AWS::ElasticLoadBalancingV2::LoadBalancer") {
        let p = &lb["Properties"];
        // A load balancer without a Scheme is internet-facing.
        if p["Scheme"] == "internal" {
            continue;
        }
        assert_ne!(
            p["Type"], "network",
            "{id}: WAF cannot protect a network load balancer"
        );
        entry_points.push((id.clone(), reference(&id)));
    }
    for (id, stage) in of_type("AWS::ApiGateway::Stage") {
        let api = stage["Properties"]["RestApiId"]["Ref"]
            .as_str()
            .unwrap()
            .to_owned();
        if props(&api)["EndpointConfiguration"]["Types"] == json!(["PRIVATE"]) {
            continue;
        }
        let arn = format!(
            "arn:${{AWS::Partition}}:apigateway:${{AWS::Region}}::/restapis/${{{api}}}/stages/${{{id}}}"
        );
        entry_points.push((id, json!({ "Fn::Sub": arn })));
    }
    for (id, deployment) in of_type("AWS::ApiGateway::Deployment") {
        assert!(
            deployment["Properties"].get("StageName").is_none(),
            "{id} makes a stage no association can name"
        );
    }
    // A CloudFront distribution takes only a CLOUDFRONT-scope ACL (us-east-1), which this
    // regional template cannot declare; HTTP APIs and Function URLs cannot take an ACL at all;
    // SAM's Api events and AWS::Serverless::Api make APIs with stages this test cannot name.
    for kind in [
        "AWS::CloudFront::Distribution",
        "AWS::ApiGatewayV2::Api",
        "AWS::ApiGatewayV2::Stage",
        "AWS::Serverless::HttpApi",
        "AWS::Serverless::Api",
        "AWS::Lambda::Url",
        "AWS::AppSync::GraphQLApi",
        "AWS::AppRunner::Service",
    ] {
        assert!(of_type(kind).is_empty(), "{kind} would bypass the WAF");
    }
    for (id, function) in of_type("AWS::Serverless::Function") {
        let p = &function["Properties"];
        assert!(
            p.get("FunctionUrlConfig").is_none(),
            "{id} has a Function URL"
        );
        for (name, event) in p["Events"].as_object().into_iter().flatten() {
            let kind = event["Type"].as_str().unwrap();
            assert!(
                !["Api", "HttpApi"].contains(&kind),
                "{id}'s event {name} makes an API outside the WAF"
            );
        }
    }
    assert!(
        template()["Globals"]["Function"]
            .get("FunctionUrlConfig")
            .is_none()
    );

    assert_eq!(
        entry_points.len(),
        2,
        "the ALB and the streaming stage: {entry_points:#?}"
    );
    let associations = of_type("AWS::WAFv2::WebACLAssociation");
    for (_, association) in &associations {
        assert_eq!(
            association["Properties"]["WebACLArn"],
            json!({"Fn::GetAtt": "WebAcl.Arn"})
        );
    }
    let protected: Vec<&Value> = associations
        .iter()
        .map(|(_, a)| &a["Properties"]["ResourceArn"])
        .collect();
    for (id, arn) in &entry_points {
        assert!(
            protected.contains(&arn),
            "{id} has no WebACLAssociation ({arn})"
        );
    }
    assert_eq!(associations.len(), entry_points.len(), "{associations:#?}");
}

#[test]
fn both_chat_functions_outlast_the_model_deadline_and_the_settlement() {
    use llmlite::config::DEFAULT_SETTLEMENT_MARGIN;
    use llmlite::settlement::SETTLE_WITHIN;
    for id in ["ChatFunction", "ChatStreamFunction"] {
        let p = props(id);
        let timeout = Duration::from_secs(p["Timeout"].as_u64().unwrap());
        let margin = p["Environment"]["Variables"]["LLMLITE_SETTLEMENT_MARGIN_MS"]
            .as_str()
            .unwrap_or_else(|| panic!("{id} states no LLMLITE_SETTLEMENT_MARGIN_MS"))
            .parse::<u64>()
            .map(Duration::from_millis)
            .unwrap();
        // The margin holds a whole settlement after the model call's deadline.
        assert!(
            margin >= SETTLE_WITHIN,
            "{id}: margin {margin:?} < settlement bound {SETTLE_WITHIN:?}"
        );
        // The model call gets some time at all, with the default margin as with this one.
        assert!(
            timeout > margin,
            "{id}: timeout {timeout:?} <= margin {margin:?}"
        );
        assert!(
            timeout >= DEFAULT_SETTLEMENT_MARGIN + SETTLE_WITHIN,
            "{id}: timeout {timeout:?} < default margin {DEFAULT_SETTLEMENT_MARGIN:?} + {SETTLE_WITHIN:?}"
        );
    }
}

#[test]
fn the_chat_stream_function_and_the_streaming_api_have_the_chat_functions_alarms() {
    let alarms = of_type("AWS::CloudWatch::Alarm");
    assert_eq!(
        alarms.len(),
        22,
        "README's \"Deploy (AWS)\" states how many alarms the stack has"
    );
    let on = |function: &str| -> BTreeSet<String> {
        alarms
            .iter()
            .filter(|(_, a)| {
                a["Properties"]["Dimensions"]
                    == json!([{"Name": "FunctionName", "Value": reference(function)}])
            })
            .map(|(_, a)| a["Properties"]["MetricName"].as_str().unwrap().to_owned())
            .collect()
    };
    let chat = on("ChatFunction");
    assert_eq!(
        chat,
        ["ConcurrentExecutions", "Duration", "Errors", "Throttles"]
            .map(str::to_owned)
            .into()
    );
    assert_eq!(on("ChatStreamFunction"), chat);
    let stage_5xx = alarms.iter().any(|(_, a)| {
        let p = &a["Properties"];
        p["Namespace"] == "AWS/ApiGateway"
            && p["MetricName"] == "5XXError"
            && p["Dimensions"]
                == json!([{"Name": "ApiName", "Value": props("StreamingApi")["Name"]},
                          {"Name": "Stage", "Value": reference("StreamingStage")}])
    });
    assert!(stage_5xx, "no 5XXError alarm on the streaming stage");
    let dashboard = props("Dashboard")["DashboardBody"]["Fn::Sub"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in [
        "${ChatFunction}",
        "${ChatStreamFunction}",
        "${StreamingStage}",
    ] {
        assert!(dashboard.contains(name), "the dashboard has no {name}");
    }
    // The body is JSON once substituted (`${X}` stands for a name or id).
    let mut body = String::new();
    let mut rest = dashboard.as_str();
    while let Some(start) = rest.find("${") {
        let end = start + rest[start..].find('}').unwrap();
        body.push_str(&rest[..start]);
        body.push_str("value");
        rest = &rest[end + 1..];
    }
    body.push_str(rest);
    let body: Value = serde_json::from_str(&body).expect("the dashboard body is JSON");
    assert!(body["widgets"].as_array().unwrap().len() >= 8);
}
