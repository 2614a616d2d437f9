//! `template.yaml`'s security and operations properties, read as CloudFormation reads them: the
//! WAF rules and the body-size override, the admin IP set, the WAF on every internet-facing entry
//! point, WAF logs to S3 with both key headers redacted, the TLS policies and HSTS, a private and
//! encrypted database behind a TLS-only proxy, its three roles with their own secrets, rotation
//! and IAM users, its logs and parameter group, encrypted and private buckets (the audit bucket's
//! Object Lock), least-privilege IAM (the Bedrock grant equal to the model catalog), a network
//! with endpoints, no NAT, narrowed egress and flow logs, alarms that all reach a topic (the 5xx
//! rate, health checks, backup failure), the streaming ingress (API Gateway response streaming
//! in front of the chat-stream function), timeouts that outlast the settlement margin, and the
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
fn the_waf_runs_the_six_rules_in_order_and_counts_large_bodies() {
    let acl = props("WebAcl");
    assert_eq!(acl["Scope"], "REGIONAL");
    assert_eq!(acl["DefaultAction"], json!({"Allow": {}}));
    let rules = acl["Rules"].as_array().unwrap();
    assert_eq!(rules.len(), 6, "{rules:#?}");

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
    // The admin IP rule, only when addresses are given (the_admin_paths_answer_only_the_trusted_addresses_when_given).
    assert_eq!(rules[5]["Fn::If"][0], "AdminIpRestriction");
    assert_eq!(rules[5]["Fn::If"][1]["Priority"], 6);

    let association = props("WebAclAssociation");
    assert_eq!(association["ResourceArn"], reference("LoadBalancer"));
    assert_eq!(
        association["WebACLArn"],
        json!({"Fn::GetAtt": "WebAcl.Arn"})
    );
}

#[test]
fn waf_logs_go_to_an_aws_waf_logs_bucket_with_both_key_headers_redacted() {
    let logging = props("WafLogging");
    assert_eq!(logging["ResourceArn"], json!({"Fn::GetAtt": "WebAcl.Arn"}));
    // One destination per web ACL: the LLD's S3 bucket.
    assert_eq!(
        logging["LogDestinationConfigs"],
        json!([{"Fn::GetAtt": "WafLogBucket.Arn"}])
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
    // WAF writes only to a bucket whose name starts with aws-waf-logs-, encrypted with SSE-S3 or
    // a customer managed key (this stack's), kept as long as the log groups.
    let bucket = props("WafLogBucket");
    assert!(
        bucket["BucketName"]["Fn::Sub"]
            .as_str()
            .unwrap()
            .starts_with("aws-waf-logs-"),
        "{bucket}"
    );
    let sse = &bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"];
    assert_eq!(sse["KMSMasterKeyID"], json!({"Fn::GetAtt": "Key.Arn"}));
    assert_eq!(
        bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"],
        reference("LogRetentionDays")
    );
    // The log delivery service may write there and use the key; the policy is the stack's, so a
    // later update does not drop the statements WAF would otherwise add itself.
    let policy = of_type("AWS::S3::BucketPolicy")
        .into_iter()
        .find(|(_, p)| p["Properties"]["Bucket"] == reference("WafLogBucket"))
        .unwrap()
        .1;
    let delivery = policy["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Principal"] == json!({"Service": "delivery.logs.amazonaws.com"}))
        .map(|s| s["Action"].as_str().unwrap().to_owned())
        .collect::<BTreeSet<_>>();
    assert_eq!(
        delivery,
        ["s3:GetBucketAcl", "s3:PutObject"]
            .map(str::to_owned)
            .into()
    );
    assert!(
        key_statement_for("delivery.logs.amazonaws.com").is_some(),
        "the log delivery service cannot use the bucket's key"
    );
    assert!(
        of_type("AWS::Logs::LogGroup")
            .iter()
            .all(|(id, _)| id != "WafLogGroup"),
        "one destination only"
    );
}

/// The key policy statement whose principal is (or includes) the service `service`.
fn key_statement_for(service: &str) -> Option<Value> {
    props("Key")["KeyPolicy"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            let p = &s["Principal"]["Service"];
            p == service
                || p.as_array()
                    .is_some_and(|all| all.iter().any(|x| x == service))
        })
        .cloned()
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
    // Only the proxy reaches the database, and the rotation functions (each role changes its
    // own password).
    let sources: BTreeSet<String> = sg_rules("DatabaseSecurityGroup", Direction::Ingress)
        .iter()
        .map(|r| {
            assert_eq!(
                (r["FromPort"].clone(), r["ToPort"].clone()),
                (json!(5432), json!(5432))
            );
            r["SourceSecurityGroupId"]["Ref"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        sources,
        ["ProxySecurityGroup", "RotationSecurityGroup"]
            .map(str::to_owned)
            .into()
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

    // The functions log in as the application role, whose secret the proxy holds, with TLS
    // verified.
    let url =
        template()["Globals"]["Function"]["Environment"]["Variables"]["DATABASE_URL"]["Fn::Sub"]
            .as_str()
            .unwrap()
            .to_owned();
    let user = secret_user("AppDatabaseSecret");
    assert_eq!(user, "llmlite_app");
    assert!(url.starts_with(&format!(
        "postgres://{user}@${{DatabaseProxy.Endpoint}}:5432/"
    )));
    assert!(url.ends_with("?sslmode=verify-full"), "{url}");
    assert_eq!(db_users("FunctionPolicy"), BTreeSet::from([user]));
}

/// The username in a generated database secret's template.
fn secret_user(id: &str) -> String {
    let template = props(id)["GenerateSecretString"]["SecretStringTemplate"]
        .as_str()
        .map(|s| serde_json::from_str::<Value>(s).unwrap())
        .unwrap();
    template["username"].as_str().unwrap().to_owned()
}

/// A statement's resources as a list (one resource or several).
fn statement_resources(statement: &Value) -> Vec<Value> {
    match &statement["Resource"] {
        Value::Array(all) => all.clone(),
        one => vec![one.clone()],
    }
}

fn strings(all: &[&str]) -> BTreeSet<String> {
    all.iter().map(|s| (*s).to_owned()).collect()
}

/// The database users a managed policy lets its holder connect to the proxy as.
fn db_users(policy: &str) -> BTreeSet<String> {
    let statements = props(policy)["PolicyDocument"]["Statement"].clone();
    let mut users = BTreeSet::new();
    for s in statements.as_array().unwrap() {
        if !actions(s).iter().any(|a| a == "rds-db:connect") {
            continue;
        }
        for r in statement_resources(s) {
            let arn = r["Fn::Sub"][0].as_str().unwrap();
            assert_eq!(
                r["Fn::Sub"][1]["ProxyId"],
                json!({"Fn::Select": [6, {"Fn::Split": [":", {"Fn::GetAtt": "DatabaseProxy.DBProxyArn"}]}]}),
                "{policy}: a user of another proxy"
            );
            let (_, user) = arn.split_once(":dbuser:${ProxyId}/").unwrap();
            users.insert(user.to_owned());
        }
    }
    users
}

#[test]
fn every_bucket_is_encrypted_private_and_tls_only() {
    let buckets = of_type("AWS::S3::Bucket");
    assert_eq!(buckets.len(), 4);
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
    // Records expire when their lock ends (the_audit_bucket_locks_records_in_compliance_mode_for_seven_years).
    assert_eq!(rule["ExpirationInDays"], reference("AuditRetentionDays"));
}

fn parameter(name: &str) -> Value {
    template()["Parameters"][name].clone()
}

#[test]
fn the_audit_bucket_locks_records_in_compliance_mode_for_seven_years() {
    let lock = &props("AuditBucket")["ObjectLockConfiguration"];
    assert_eq!(lock["ObjectLockEnabled"], "Enabled");
    assert_eq!(
        lock["Rule"]["DefaultRetention"],
        json!({"Mode": reference("AuditRetentionMode"), "Days": reference("AuditRetentionDays")})
    );
    let mode = parameter("AuditRetentionMode");
    assert_eq!(mode["Default"], "COMPLIANCE");
    assert_eq!(mode["AllowedValues"], json!(["COMPLIANCE", "GOVERNANCE"]));
    let days = parameter("AuditRetentionDays");
    // The LLD's 7 years, leap days included.
    assert_eq!(days["Default"], 2557);
    // Glacier from day 90: S3 refuses an expiry that does not come after the transition.
    assert!(days["MinValue"].as_i64().unwrap() > 90, "{days}");
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
    let bedrock: Vec<(String, Value)> = statements_for("bedrock:")
        .into_iter()
        .filter(|(_, s)| actions(s) != ["bedrock:ApplyGuardrail"])
        .collect();
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
        // An embedding model is an in-Region foundation model: called in the stack's Region.
        if model.embedding.is_some() {
            assert!(
                id.starts_with("amazon.") || id.starts_with("cohere."),
                "{id}: an embedding model with a profile prefix"
            );
            expected.insert(format!(
                "arn:${{AWS::Partition}}:bedrock:${{AWS::Region}}::foundation-model/{id}"
            ));
            continue;
        }
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
fn guardrails_may_be_applied_only_as_the_parameter_lists_them() {
    let grants: Vec<(String, Value)> = statements_for("bedrock:ApplyGuardrail");
    assert_eq!(grants.len(), 1, "{grants:#?}");
    let (owner, grant) = &grants[0];
    assert_eq!(owner, "BedrockPolicy");
    assert_eq!(actions(grant), ["bedrock:ApplyGuardrail"]);
    // The parameter's ARNs when it lists any; else an ARN no guardrail can have.
    assert_eq!(
        grant["Resource"],
        json!({"Fn::If": ["HasGuardrails", reference("GuardrailArns"), [{"Fn::Sub":
            "arn:${AWS::Partition}:bedrock:${AWS::Region}:${AWS::AccountId}:guardrail/none-listed"}]]})
    );
    let parameter = parameter("GuardrailArns");
    assert_eq!(parameter["Type"], "CommaDelimitedList");
    assert_eq!(parameter["Default"], "");
    // Each entry is empty or one guardrail's ARN: no wildcard can be granted.
    assert_eq!(
        parameter["AllowedPattern"],
        "^$|^arn:aws[a-z-]*:bedrock:[a-z0-9-]+:[0-9]{12}:guardrail/[a-z0-9]+$"
    );
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
fn every_subnet_is_inside_the_vpc_and_only_company_sign_in_has_a_nat() {
    let (vpc, vpc_mask) = cidr(props("Vpc")["CidrBlock"].as_str().unwrap());
    assert_eq!((vpc, vpc_mask), cidr("10.1.0.0/20"));
    let subnets = of_type("AWS::EC2::Subnet");
    assert_eq!(subnets.len(), 8);
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
    // A NAT gateway only with company sign-in, and only the key-admin function's own subnets
    // route through it: every other function has no route out.
    for kind in ["AWS::EC2::NatGateway", "AWS::EC2::EIP"] {
        let found = of_type(kind);
        assert_eq!(found.len(), 1, "{kind}");
        for (id, resource) in found {
            assert_eq!(resource["Condition"], "HasOidc", "{id}");
        }
    }
    let routes = of_type("AWS::EC2::Route");
    let through_nat: Vec<&str> = routes
        .iter()
        .filter(|(_, r)| r["Properties"].get("NatGatewayId").is_some())
        .map(|(id, r)| {
            assert_eq!(r["Condition"], "HasOidc", "{id}");
            assert_eq!(
                r["Properties"]["RouteTableId"],
                reference("SignInRouteTable")
            );
            id.as_str()
        })
        .collect();
    assert_eq!(through_nat, ["SignInDefaultRoute"]);
    assert!(
        routes
            .iter()
            .all(|(_, r)| r["Properties"]["RouteTableId"] != reference("PrivateRouteTable")),
        "the private subnets have no route out"
    );
    for subnet in ["SignInSubnetA", "SignInSubnetB"] {
        assert_eq!(template()["Resources"][subnet]["Condition"], "HasOidc");
    }
    let key_admin = &props("KeyAdminFunction")["VpcConfig"];
    assert_eq!(
        key_admin["SubnetIds"]["Fn::If"][1],
        json!([reference("SignInSubnetA"), reference("SignInSubnetB")])
    );
    assert_eq!(
        key_admin["SubnetIds"]["Fn::If"][2],
        json!([reference("PrivateSubnetA"), reference("PrivateSubnetB")])
    );

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
        // Only with the Tracing parameter on (its own test checks the condition).
        ("xray", "Interface"),
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
                // The key-admin function's subnets are its own with company sign-in (the NAT
                // test checks them).
                if key == "VpcConfig" && id == "KeyAdminFunction" {
                    continue;
                }
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
    // The size the CPU-share bench chose (BENCHMARKS.md), for both.
    assert_eq!(chat["MemorySize"], json!(256));
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
    // What the handler needs to create the roles (llmlite::deploy reads these names): the
    // master user, resolved from its secret, and the two roles' secrets.
    assert_eq!(
        p["AdminUser"],
        json!({"Fn::Sub": "{{resolve:secretsmanager:${DatabaseSecret}:SecretString:username}}"})
    );
    assert_eq!(p["OwnerSecretArn"], reference("OwnerDatabaseSecret"));
    assert_eq!(p["AppSecretArn"], reference("AppDatabaseSecret"));
    // The functions reach the proxy and the endpoints only through the separate egress rules.
    for rule in ["FunctionToProxyEgress", "FunctionToEndpointsEgress"] {
        assert!(depends_on("DatabaseMigrations").contains(rule), "{rule}");
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
    let given = &fixture["ResourceProperties"];
    assert_eq!(given["AdminUser"], secret_user("DatabaseSecret"));
    for (key, secret) in [
        ("OwnerSecretArn", "OwnerDatabaseSecret"),
        ("AppSecretArn", "AppDatabaseSecret"),
    ] {
        assert!(
            given[key].as_str().is_some_and(
                |arn| arn.starts_with("arn:aws:secretsmanager:") && arn.contains(secret)
            ),
            "the fixture's {key}: {given}"
        );
    }
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
        29,
        "docs/deploy.md (\"Deploy (AWS)\") states how many alarms the stack has"
    );
    // The metrics each function's alarms read, one entry per alarm and metric.
    let on = |function: &str| -> Vec<String> {
        let dimensions = json!([{"Name": "FunctionName", "Value": reference(function)}]);
        let mut names: Vec<String> = alarms
            .iter()
            .flat_map(|(_, a)| alarm_metrics(&a["Properties"]))
            .filter(|m| m["Dimensions"] == dimensions)
            .map(|m| m["MetricName"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let chat = on("ChatFunction");
    assert_eq!(
        chat,
        [
            "ConcurrentExecutions",
            "ConcurrentExecutions",
            "Duration",
            "Errors",
            "Throttles"
        ]
        .map(str::to_owned),
        "the warning at 80 % and the alarm at the reservation read the same concurrency"
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
    let body = dashboard_body();
    assert!(body["widgets"].as_array().unwrap().len() >= 8);
}

/// The dashboard's body, JSON once substituted (`${X}` stands for a name, an id or a number).
fn dashboard_body() -> Value {
    let dashboard = props("Dashboard")["DashboardBody"]["Fn::Sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut body = String::new();
    let mut rest = dashboard.as_str();
    while let Some(start) = rest.find("${") {
        let end = start + rest[start..].find('}').unwrap();
        body.push_str(&rest[..start]);
        body.push('1');
        rest = &rest[end + 1..];
    }
    body.push_str(rest);
    serde_json::from_str(&body).expect("the dashboard body is JSON")
}

/// Every `LLMLite` metric a dashboard widget draws is one the code writes, with dimensions it
/// writes (`llmlite::clients::telemetry::emf_line`), so a renamed metric fails here, not on the
/// dashboard; and every widget's title asks the question it answers.
#[test]
fn every_dashboard_widget_draws_metrics_the_code_emits() {
    let emitted = llmlite::clients::telemetry::emf_line(
        &llmlite::clients::telemetry::RequestMetrics {
            ttft_ms: Some(1.0),
            ..Default::default()
        },
        0,
    );
    let directive = &emitted["_aws"]["CloudWatchMetrics"][0];
    let namespace = directive["Namespace"].as_str().unwrap();
    let names: BTreeSet<String> = directive["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap().to_owned())
        .collect();
    let dimension_sets: Vec<BTreeSet<String>> = directive["Dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|set| {
            set.as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    let check = |metric: &str, dimensions: BTreeSet<String>, title: &str| {
        assert!(names.contains(metric), "{title}: {metric} is not emitted");
        assert!(
            dimension_sets.contains(&dimensions),
            "{title}: {metric} by {dimensions:?} is not emitted"
        );
    };
    let mut drawn = BTreeSet::new();
    for widget in dashboard_body()["widgets"].as_array().unwrap() {
        let properties = &widget["properties"];
        let title = properties["title"].as_str().unwrap_or_default();
        assert!(
            title.contains('?'),
            "a widget's title asks its question: {title:?}"
        );
        let mut previous = (String::new(), String::new());
        for entry in properties["metrics"].as_array().into_iter().flatten() {
            let entry = entry.as_array().unwrap();
            if let Some(expression) = entry[0]["expression"].as_str() {
                // SEARCH('{Namespace,dim,...} MetricName="X" ...', ...)
                let schema =
                    &expression[expression.find('{').unwrap() + 1..expression.find('}').unwrap()];
                let mut parts = schema.split(',');
                let space = parts.next().unwrap();
                let metric = expression
                    .split("MetricName=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                if space == namespace {
                    check(metric, parts.map(str::to_owned).collect(), title);
                    drawn.insert(metric.to_owned());
                }
                continue;
            }
            let text: Vec<&str> = entry.iter().map_while(Value::as_str).collect();
            let space = if text[0] == "." {
                previous.0.clone()
            } else {
                text[0].to_owned()
            };
            let metric = if text[1] == "." {
                previous.1.clone()
            } else {
                text[1].to_owned()
            };
            previous = (space.clone(), metric.clone());
            if space == namespace {
                let dimensions = text[2..].chunks(2).map(|pair| pair[0].to_owned()).collect();
                check(&metric, dimensions, title);
                drawn.insert(metric);
            }
        }
    }
    // The LLD's questions, each answered by a widget of its own.
    for needed in [
        "UpstreamLatency",
        "OverheadLatency",
        "TimeToFirstToken",
        "Cost",
        "Errors5xx",
        "OutboxDepth",
        "Throttled",
    ] {
        assert!(drawn.contains(needed), "no widget draws {needed}");
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

/// A security group's rules one way, inline and from separate `SecurityGroupIngress`/`Egress`
/// resources (without their `GroupId`), as one list.
fn sg_rules(group: &str, direction: Direction) -> Vec<Value> {
    let (inline, kind) = match direction {
        Direction::Ingress => ("SecurityGroupIngress", "AWS::EC2::SecurityGroupIngress"),
        Direction::Egress => ("SecurityGroupEgress", "AWS::EC2::SecurityGroupEgress"),
    };
    let mut rules: Vec<Value> = props(group)[inline].as_array().cloned().unwrap_or_default();
    for (_, rule) in of_type(kind) {
        let mut p = rule["Properties"].clone();
        if p["GroupId"] == reference(group) {
            p.as_object_mut().unwrap().remove("GroupId");
            rules.push(p);
        }
    }
    rules
}

/// The rule a group that needs no egress declares, so that EC2 drops its allow-all default.
fn no_egress() -> Value {
    json!({"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "CidrIp": "127.0.0.1/32", "Description": "NoEgress"})
}

/// A rule's port and peer, in one line: `tcp 5432 -> ProxySecurityGroup`.
fn peer(rule: &Value) -> String {
    let to = ["DestinationSecurityGroupId", "SourceSecurityGroupId"]
        .iter()
        .find_map(|k| rule[*k]["Ref"].as_str().map(str::to_owned))
        .unwrap_or_else(|| rule["CidrIp"].to_string());
    format!(
        "{} {} -> {to}",
        rule["IpProtocol"].as_str().unwrap(),
        rule["FromPort"]
    )
}

fn peers(group: &str, direction: Direction) -> BTreeSet<String> {
    sg_rules(group, direction).iter().map(peer).collect()
}

#[test]
fn security_group_egress_reaches_only_each_groups_peers() {
    // The database and the endpoints only answer: one rule that matches nothing, so EC2's
    // allow-all default is gone.
    for group in ["DatabaseSecurityGroup", "EndpointSecurityGroup"] {
        assert_eq!(sg_rules(group, Direction::Egress), [no_egress()], "{group}");
    }
    assert_eq!(
        peers("ProxySecurityGroup", Direction::Egress),
        strings(&["tcp 5432 -> DatabaseSecurityGroup"])
    );
    assert_eq!(
        peers("RotationSecurityGroup", Direction::Egress),
        strings(&[
            "tcp 5432 -> DatabaseSecurityGroup",
            "tcp 443 -> EndpointSecurityGroup"
        ])
    );
    assert_eq!(
        peers("EndpointSecurityGroup", Direction::Ingress),
        strings(&[
            "tcp 443 -> FunctionSecurityGroup",
            "tcp 443 -> RotationSecurityGroup"
        ])
    );

    // The functions: PostgreSQL to the proxy, HTTPS to the interface endpoints, and HTTPS to
    // the S3 gateway endpoint: its prefix list when given, else 0.0.0.0/0 (routed only there).
    let egress = sg_rules("FunctionSecurityGroup", Direction::Egress);
    assert_eq!(egress.len(), 3, "{egress:#?}");
    let named: BTreeSet<String> = egress
        .iter()
        .filter(|r| r.get("DestinationSecurityGroupId").is_some())
        .map(peer)
        .collect();
    assert_eq!(
        named,
        strings(&[
            "tcp 5432 -> ProxySecurityGroup",
            "tcp 443 -> EndpointSecurityGroup"
        ])
    );
    let s3 = egress
        .iter()
        .find(|r| r.get("DestinationSecurityGroupId").is_none())
        .unwrap();
    assert_eq!(
        (s3["FromPort"].clone(), s3["ToPort"].clone()),
        (json!(443), json!(443))
    );
    assert_eq!(
        s3["DestinationPrefixListId"],
        json!({"Fn::If": ["HasS3PrefixList", reference("S3PrefixListId"), reference("AWS::NoValue")]})
    );
    assert_eq!(
        s3["CidrIp"],
        json!({"Fn::If": ["HasS3PrefixList", reference("AWS::NoValue"), "0.0.0.0/0"]})
    );

    // Every group but the ALB's declares its egress, so none keeps the allow-all default.
    for (id, group) in of_type("AWS::EC2::SecurityGroup") {
        if id == "AlbSecurityGroup" {
            continue;
        }
        assert!(
            group["Properties"]["SecurityGroupEgress"].is_array(),
            "{id} keeps EC2's allow-all egress"
        );
    }
}

#[test]
fn each_database_role_has_its_own_secret_registered_with_the_proxy() {
    let roles = [
        ("DatabaseSecret", "llmlite"),
        ("OwnerDatabaseSecret", "llmlite_owner"),
        ("AppDatabaseSecret", "llmlite_app"),
    ];
    for (secret, user) in roles {
        assert_eq!(secret_user(secret), user, "{secret}");
        let generate = &props(secret)["GenerateSecretString"];
        assert_eq!(generate["GenerateStringKey"], "password", "{secret}");
        assert_eq!(generate["ExcludePunctuation"], true, "{secret}");
        assert_eq!(props(secret)["KmsKeyId"], reference("Key"), "{secret}");
        // Attached to the instance: host, port and engine in the secret, which rotation needs.
        let attached = of_type("AWS::SecretsManager::SecretTargetAttachment")
            .into_iter()
            .any(|(_, a)| {
                a["Properties"]["SecretId"] == reference(secret)
                    && a["Properties"]["TargetId"] == reference("Database")
                    && a["Properties"]["TargetType"] == "AWS::RDS::DBInstance"
            });
        assert!(attached, "{secret} is not attached to the database");
    }
    let auth = props("DatabaseProxy")["Auth"].as_array().unwrap().clone();
    let registered: BTreeSet<String> = auth
        .iter()
        .map(|a| {
            assert_eq!(a["AuthScheme"], "SECRETS");
            assert_eq!(a["IAMAuth"], "REQUIRED");
            assert_eq!(a["ClientPasswordAuthType"], "POSTGRES_SCRAM_SHA_256");
            a["SecretArn"]["Ref"].as_str().unwrap().to_owned()
        })
        .collect();
    let secrets: BTreeSet<String> = roles.iter().map(|(s, _)| (*s).to_owned()).collect();
    assert_eq!(registered, secrets);
    // The proxy may read exactly those secrets.
    let readable: BTreeSet<String> = iam_statements()
        .into_iter()
        .filter(|(id, s)| {
            id == "ProxyRole"
                && actions(s)
                    .iter()
                    .any(|a| a == "secretsmanager:GetSecretValue")
        })
        .flat_map(|(_, s)| s["Resource"].as_array().cloned().unwrap_or_default())
        .map(|r| r["Ref"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(readable, secrets);
}

#[test]
fn only_the_migration_handler_may_connect_as_the_owner_or_the_master_user() {
    // What each function may connect as, and which database secrets it may read.
    let mut users_of = std::collections::BTreeMap::new();
    for (id, function) in of_type("AWS::Serverless::Function") {
        let mut users = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        for policy in function["Properties"]["Policies"].as_array().unwrap() {
            let policy = policy["Ref"]
                .as_str()
                .expect("functions use managed policies");
            users.extend(db_users(policy));
            for s in props(policy)["PolicyDocument"]["Statement"]
                .as_array()
                .unwrap()
            {
                if actions(s)
                    .iter()
                    .any(|a| a == "secretsmanager:GetSecretValue")
                {
                    let resources = statement_resources(s);
                    secrets.extend(
                        resources
                            .iter()
                            .map(|r| r["Ref"].as_str().unwrap().to_owned()),
                    );
                }
            }
        }
        users_of.insert(id, (users, secrets));
    }
    for id in [
        "ChatFunction",
        "ChatStreamFunction",
        "KeyAdminFunction",
        "HealthFunction",
    ] {
        assert_eq!(users_of[id].0, strings(&["llmlite_app"]), "{id}");
        assert_eq!(users_of[id].1, strings(&["MasterKeySecret"]), "{id}");
    }
    // The spend-rollup function serves DatabaseMigrations: the master user creates the roles
    // from their secrets' passwords, the owner migrates.
    let master = secret_user("DatabaseSecret");
    assert_eq!(
        users_of["SpendRollupFunction"].0,
        strings(&["llmlite_app", "llmlite_owner", &master])
    );
    assert_eq!(
        users_of["SpendRollupFunction"].1,
        strings(&[
            "MasterKeySecret",
            "OwnerDatabaseSecret",
            "AppDatabaseSecret"
        ])
    );
    assert_eq!(
        props("DatabaseMigrations")["ServiceToken"],
        json!({"Fn::GetAtt": "SpendRollupFunction.Arn"})
    );
    // Reading the role passwords is all the handler may do with those secrets.
    assert_eq!(
        statement("MigrationPolicy", "RolePasswords")["Action"],
        "secretsmanager:GetSecretValue"
    );
}

#[test]
fn the_database_secrets_rotate_in_the_vpc_every_30_days_by_default() {
    let rotation_days = parameter("DatabaseRotationDays");
    assert_eq!(rotation_days["Default"], 30);
    assert!(
        template()["Transform"]
            .as_array()
            .unwrap()
            .contains(&json!("AWS::SecretsManager-2024-09-16")),
        "HostedRotationLambda needs the Secrets Manager transform"
    );
    let schedules = of_type("AWS::SecretsManager::RotationSchedule");
    let rotated: BTreeSet<String> = schedules
        .iter()
        .map(|(id, schedule)| {
            let p = &schedule["Properties"];
            assert_eq!(
                p["RotationRules"]["AutomaticallyAfterDays"],
                reference("DatabaseRotationDays"),
                "{id}"
            );
            let hosted = &p["HostedRotationLambda"];
            assert_eq!(hosted["RotationType"], "PostgreSQLSingleUser", "{id}");
            assert_eq!(hosted["KmsKeyArn"], json!({"Fn::GetAtt": "Key.Arn"}), "{id}");
            assert_eq!(
                hosted["VpcSubnetIds"],
                json!({"Fn::Join": [",", [reference("PrivateSubnetA"), reference("PrivateSubnetB")]]}),
                "{id}"
            );
            assert_eq!(hosted["VpcSecurityGroupIds"], reference("RotationSecurityGroup"), "{id}");
            // Reaching Secrets Manager through its endpoint, and the database, before the first run.
            let waits = depends_on(id);
            for needed in ["DatabaseFromRotationIngress", "EndpointFromRotationIngress"] {
                assert!(waits.contains(needed), "{id} does not wait for {needed}");
            }
            let secret = p["SecretId"]["Ref"].as_str().unwrap().to_owned();
            if secret != "DatabaseSecret" {
                // The handler creates these roles: they must exist before their first rotation.
                assert!(waits.contains("DatabaseMigrations"), "{id}");
            }
            secret
        })
        .collect();
    assert_eq!(
        rotated,
        ["AppDatabaseSecret", "DatabaseSecret", "OwnerDatabaseSecret"]
            .map(str::to_owned)
            .into(),
        "the master key (MasterKeySecret) is rotated by hand (RUNBOOK.md)"
    );
    // The hosted function and the endpoint it calls: the rotation group reaches the endpoint
    // (security_group_egress_reaches_only_each_groups_peers).
    assert_eq!(
        props("SecretsEndpoint")["SecurityGroupIds"],
        json!([reference("EndpointSecurityGroup")])
    );
}

/// Where an alarm (or the backup-failure rule) sends its notifications.
fn alarm_topic() -> Value {
    json!({"Fn::If": ["HasAlarmTopic", reference("AlarmTopicArn"), reference("AlarmTopic")]})
}

#[test]
fn every_alarm_notifies_the_alarm_topic_on_alarm_and_on_ok() {
    let alarms = of_type("AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 29);
    for (id, alarm) in &alarms {
        let p = &alarm["Properties"];
        assert_eq!(p["AlarmActions"], json!([alarm_topic()]), "{id}");
        assert_eq!(p["OKActions"], json!([alarm_topic()]), "{id}");
    }
    // The topic exists unless one is given, encrypted, and lets CloudWatch and the backup rule
    // publish; the key lets them use it.
    let conditions = &template()["Conditions"];
    assert_eq!(
        conditions["CreateAlarmTopic"],
        json!({"Fn::Equals": [reference("AlarmTopicArn"), ""]})
    );
    let topic = resource("AlarmTopic");
    assert_eq!(topic["Condition"], "CreateAlarmTopic");
    assert_eq!(topic["Properties"]["KmsMasterKeyId"], reference("Key"));
    let publishers: BTreeSet<String> = props("AlarmTopicPolicy")["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["Action"], "sns:Publish");
            assert_eq!(s["Resource"], reference("AlarmTopic"));
            assert!(s["Condition"].is_object(), "{s}");
            s["Principal"]["Service"].as_str().unwrap().to_owned()
        })
        .collect();
    let services = ["cloudwatch.amazonaws.com", "events.amazonaws.com"];
    assert_eq!(publishers, services.map(str::to_owned).into());
    for service in services {
        let grant =
            key_statement_for(service).unwrap_or_else(|| panic!("{service} cannot use the key"));
        assert!(actions(&grant).iter().any(|a| a == "kms:GenerateDataKey*"));
    }
    // An optional e-mail subscription.
    let email = resource("AlarmEmailSubscription");
    assert_eq!(email["Condition"], "HasAlarmEmail");
    assert_eq!(email["Properties"]["Protocol"], "email");
    assert_eq!(email["Properties"]["Endpoint"], reference("AlarmEmail"));
    assert_eq!(email["Properties"]["TopicArn"], alarm_topic());
    assert_eq!(parameter("AlarmEmail")["Default"], "");
}

#[test]
fn a_failed_backup_reaches_the_alarm_topic() {
    // No CloudWatch metric says a backup failed: RDS's event does, through EventBridge.
    let rule = props("DatabaseBackupFailureRule");
    let pattern = &rule["EventPattern"];
    assert_eq!(pattern["source"], json!(["aws.rds"]));
    assert_eq!(pattern["detail-type"], json!(["RDS DB Instance Event"]));
    assert_eq!(
        pattern["detail"]["SourceArn"],
        json!([{"Fn::GetAtt": "Database.DBInstanceArn"}])
    );
    assert_eq!(
        pattern["detail"]["EventCategories"],
        json!(["backup", "failure"])
    );
    // Not the daily "backing up" and "finished backup" notices.
    assert_eq!(
        pattern["detail"]["EventID"],
        json!([{"anything-but": ["RDS-EVENT-0001", "RDS-EVENT-0002"]}])
    );
    assert_eq!(rule["Targets"].as_array().unwrap().len(), 1);
    assert_eq!(rule["Targets"][0]["Arn"], alarm_topic());
}

#[test]
fn the_alarms_the_lld_asks_for_exist_with_its_thresholds() {
    let alarm = |id: &str| props(id);
    let memory = alarm("DatabaseMemoryAlarm");
    assert_eq!(
        (memory["Namespace"].clone(), memory["MetricName"].clone()),
        (json!("AWS/RDS"), json!("FreeableMemory"))
    );
    assert_eq!(memory["ComparisonOperator"], "LessThanThreshold");
    let read = alarm("DatabaseReadLatencyAlarm");
    assert_eq!(read["MetricName"], "ReadLatency");
    assert_eq!(
        read["Threshold"],
        json!(0.1),
        "the LLD's 100 ms, in seconds"
    );
    let waf = alarm("WafBlockedAlarm");
    assert_eq!(waf["MetricName"], "BlockedRequests");
    assert_eq!(
        (waf["Threshold"].clone(), waf["Period"].clone()),
        (json!(100), json!(300))
    );
    // Concurrency cannot pass the reservation: the alarm fires on reaching it.
    for (id, reservation) in [
        ("ChatConcurrencyAlarm", "ChatReservedConcurrency"),
        (
            "ChatStreamConcurrencyAlarm",
            "ChatStreamReservedConcurrency",
        ),
    ] {
        assert_eq!(alarm(id)["Threshold"], reference(reservation), "{id}");
        assert_eq!(
            alarm(id)["ComparisonOperator"],
            "GreaterThanOrEqualToThreshold",
            "{id}"
        );
    }
    for id in ["DatabaseMemoryAlarm", "DatabaseReadLatencyAlarm"] {
        assert_eq!(
            alarm(id)["Dimensions"],
            json!([{"Name": "DBInstanceIdentifier", "Value": reference("Database")}]),
            "{id}"
        );
    }
}

/// The metrics an alarm reads (`Namespace`, `MetricName`, `Dimensions`): its own, or each
/// `MetricStat` of its metric math.
fn alarm_metrics(alarm: &Value) -> Vec<Value> {
    if alarm.get("MetricName").is_some() {
        return vec![json!({
            "Namespace": alarm["Namespace"],
            "MetricName": alarm["MetricName"],
            "Dimensions": alarm["Dimensions"],
        })];
    }
    alarm["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.get("MetricStat").map(|s| s["Metric"].clone()))
        .collect()
}

/// The value of a metric-math expression of numbers, metric IDs and `${Parameter}`s joined by
/// `*` and `/`, read left to right as CloudWatch reads them, with `values` for the names.
fn evaluate(expression: &str, values: &[(&str, f64)]) -> f64 {
    let value = |token: &str| -> f64 {
        let name = token
            .strip_prefix("${")
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(token);
        token
            .parse()
            .ok()
            .or_else(|| values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
            .unwrap_or_else(|| panic!("{expression}: no value for {token}"))
    };
    let mut tokens = expression.split_whitespace();
    let mut result = value(tokens.next().unwrap());
    while let Some(operator) = tokens.next() {
        let operand = value(
            tokens
                .next()
                .unwrap_or_else(|| panic!("{expression}: ends in {operator}")),
        );
        result = match operator {
            "*" => result * operand,
            "/" => result / operand,
            other => panic!("{expression}: this test reads * and / only, not {other}"),
        };
    }
    result
}

/// Whether `value` puts `alarm` in ALARM, by its threshold and comparison.
fn breaches(alarm: &Value, value: f64) -> bool {
    let threshold = alarm["Threshold"].as_f64().unwrap();
    match alarm["ComparisonOperator"].as_str().unwrap() {
        "GreaterThanOrEqualToThreshold" => value >= threshold,
        "GreaterThanThreshold" => value > threshold,
        "LessThanThreshold" => value < threshold,
        "LessThanOrEqualToThreshold" => value <= threshold,
        other => panic!("unexpected comparison {other}"),
    }
}

#[test]
fn each_chat_function_warns_at_80_percent_of_its_reservation() {
    for (id, function, reservation, at_reservation) in [
        (
            "ChatConcurrencyWarningAlarm",
            "ChatFunction",
            "ChatReservedConcurrency",
            "ChatConcurrencyAlarm",
        ),
        (
            "ChatStreamConcurrencyWarningAlarm",
            "ChatStreamFunction",
            "ChatStreamReservedConcurrency",
            "ChatStreamConcurrencyAlarm",
        ),
    ] {
        let alarm = props(id);
        let full = props(at_reservation);
        // The function's concurrency, read as the alarm at the reservation reads it.
        let metrics = alarm["Metrics"].as_array().unwrap();
        let stats: Vec<&Value> = metrics
            .iter()
            .filter(|m| m.get("MetricStat").is_some())
            .collect();
        assert_eq!(stats.len(), 1, "{id}");
        let stat = &stats[0]["MetricStat"];
        assert_eq!(stat["Metric"]["Namespace"], full["Namespace"], "{id}");
        assert_eq!(stat["Metric"]["MetricName"], "ConcurrentExecutions", "{id}");
        assert_eq!(stat["Metric"]["Dimensions"], full["Dimensions"], "{id}");
        assert_eq!(
            stat["Metric"]["Dimensions"],
            json!([{"Name": "FunctionName", "Value": reference(function)}]),
            "{id}"
        );
        assert_eq!(stat["Stat"], full["Statistic"], "{id}");
        assert_eq!(stat["Period"], full["Period"], "{id}");
        assert_eq!(
            alarm["EvaluationPeriods"], full["EvaluationPeriods"],
            "{id}"
        );
        assert_eq!(full["Threshold"], reference(reservation), "{id}");
        // A reservation of 0 would stop the function; it cannot divide by zero either.
        assert_eq!(parameter(reservation)["MinValue"], 1, "{reservation}");

        // The one expression the alarm compares: with any reservation, it breaches from 80 %
        // of it (rounded up) and not one below.
        let returned: Vec<&Value> = metrics.iter().filter(|m| m["ReturnData"] == true).collect();
        assert_eq!(returned.len(), 1, "{id}");
        let expression = returned[0]["Expression"]["Fn::Sub"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: the expression takes the reservation by Fn::Sub"));
        let metric = stats[0]["Id"].as_str().unwrap();
        for reserved in [1_u32, 3, 10, 64, 100, 999, 3000] {
            for concurrency in 0..=reserved {
                let value = evaluate(
                    expression,
                    &[
                        (metric, f64::from(concurrency)),
                        (reservation, f64::from(reserved)),
                    ],
                );
                assert_eq!(
                    breaches(&alarm, value),
                    5 * concurrency >= 4 * reserved,
                    "{id}: {concurrency} of {reserved} in use ({expression} = {value})"
                );
            }
        }
        assert_eq!(alarm["TreatMissingData"], "notBreaching", "{id}");
    }
}

#[test]
fn the_warning_arithmetic_is_checked() {
    let alarm = json!({"Threshold": 80, "ComparisonOperator": "GreaterThanOrEqualToThreshold"});
    let share = |c: f64, r: f64| evaluate("100 * c / ${R}", &[("c", c), ("R", r)]);
    assert!(breaches(&alarm, share(80.0, 100.0)));
    assert!(!breaches(&alarm, share(79.0, 100.0)));
    // An expression that forgot the per cent would never fire.
    assert!(!breaches(
        &alarm,
        evaluate("c / ${R}", &[("c", 100.0), ("R", 100.0)])
    ));
    assert_eq!(evaluate("8 / 2 * 4", &[]), 16.0, "left to right");
}

/// The streaming API's gateway response of one type.
fn gateway_response(kind: &str) -> Value {
    let all = of_rest_api("AWS::ApiGateway::GatewayResponse", "StreamingApi");
    let found: Vec<&Value> = all
        .iter()
        .map(|(_, r)| &r["Properties"])
        .filter(|p| p["ResponseType"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} gateway response: {all:#?}");
    found[0].clone()
}

/// A gateway response that an OpenAI or Anthropic SDK retries: `status`, a `Retry-After` of a
/// few seconds, and a JSON error body both read, with `kind` as its `type`.
fn assert_retryable(kind: &str, status: &str, error_type: &str) {
    let response = gateway_response(kind);
    assert_eq!(response["StatusCode"], status, "{kind}");
    // A static header value is quoted; the SDKs honour Retry-After up to 60 s.
    let retry_after = response["ResponseParameters"]["gatewayresponse.header.Retry-After"]
        .as_str()
        .unwrap_or_else(|| panic!("{kind}: no Retry-After"));
    let seconds: u64 = retry_after
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{kind}: Retry-After {retry_after} is not a quoted number"));
    assert!((1..=60).contains(&seconds), "{kind}: Retry-After {seconds}");
    let templates = response["ResponseTemplates"].as_object().unwrap();
    assert_eq!(
        templates.keys().collect::<Vec<_>>(),
        ["application/json"],
        "{kind}"
    );
    let template = templates["application/json"].as_str().unwrap();
    assert!(
        !template.contains('$'),
        "{kind}: a fixed body, no variables"
    );
    let body: Value = serde_json::from_str(template)
        .unwrap_or_else(|e| panic!("{kind}: the body is not JSON ({e}): {template}"));
    // Anthropic's shape: {"type": "error", "error": {"type", "message"}}.
    assert_eq!(body["type"], "error", "{kind}");
    assert_eq!(body["error"]["type"], error_type, "{kind}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{kind}"
    );
    // OpenAI's: {"error": {"message", "type", "param", "code"}}, code the status as the
    // gateway's own errors send it.
    assert_eq!(body["error"]["code"], status, "{kind}");
    assert!(body["error"]["param"].is_null(), "{kind}");
}

#[test]
fn a_throttled_or_failed_lambda_behind_the_streaming_api_is_a_retryable_503_with_retry_after() {
    use llmlite::ApiError;
    // Lambda's 429 reaches API Gateway as an integration failure, and every other 5xx type
    // without a response of its own falls back to DEFAULT_5XX: both are the 503 the gateway
    // itself sends when it cannot serve (the template gives the sources).
    let unavailable = ApiError::UpstreamUnavailable(String::new());
    assert_eq!(unavailable.status().as_str(), "503");
    for kind in ["INTEGRATION_FAILURE", "DEFAULT_5XX"] {
        assert_retryable(kind, "503", unavailable.kind());
    }
    // The stage's own rate limit: the gateway's 429.
    let limited = ApiError::RateLimited {
        message: String::new(),
        retry_after_secs: 1,
    };
    assert_retryable("THROTTLED", "429", limited.kind());
    // A missing route stays the JSON 404 the ALB's default action answers.
    assert_eq!(
        gateway_response("MISSING_AUTHENTICATION_TOKEN")["StatusCode"],
        "404"
    );
}

#[test]
fn the_5xx_alarm_is_a_rate_with_a_minimum_traffic_guard() {
    let alarm = props("Alb5xxAlarm");
    for key in ["MetricName", "Namespace", "Statistic", "Dimensions"] {
        assert!(alarm.get(key).is_none(), "a rate alarm has no single {key}");
    }
    let metrics = alarm["Metrics"].as_array().unwrap();
    let by_id = |id: &str| {
        metrics
            .iter()
            .find(|m| m["Id"] == id)
            .unwrap_or_else(|| panic!("no metric {id}"))
            .clone()
    };
    for (id, name) in [
        ("target5xx", "HTTPCode_Target_5XX_Count"),
        ("elb5xx", "HTTPCode_ELB_5XX_Count"),
        ("requests", "RequestCount"),
    ] {
        let stat = &by_id(id)["MetricStat"];
        assert_eq!(stat["Metric"]["Namespace"], "AWS/ApplicationELB");
        assert_eq!(stat["Metric"]["MetricName"], name);
        assert_eq!(
            stat["Metric"]["Dimensions"],
            json!([{"Name": "LoadBalancer", "Value": {"Fn::GetAtt": "LoadBalancer.LoadBalancerFullName"}}])
        );
        assert_eq!(stat["Stat"], "Sum");
        assert_eq!(stat["Period"], 300);
    }
    assert_eq!(
        by_id("errors")["Expression"],
        "FILL(target5xx, 0) + FILL(elb5xx, 0)"
    );
    assert_eq!(
        by_id("total")["Expression"],
        "FILL(requests, 0) + FILL(elb5xx, 0)"
    );
    // A percentage, and 0 below 20 requests in a period.
    assert_eq!(
        by_id("rate")["Expression"],
        "IF(total >= 20, 100 * errors / total, 0)"
    );
    let returned: Vec<&Value> = metrics.iter().filter(|m| m["ReturnData"] == true).collect();
    assert_eq!(returned.len(), 1);
    assert_eq!(returned[0]["Id"], "rate");
    // The LLD's > 5 % over 10 minutes.
    assert_eq!(alarm["Threshold"], 5);
    assert_eq!(alarm["ComparisonOperator"], "GreaterThanThreshold");
    assert_eq!(alarm["EvaluationPeriods"], 2);
}

#[test]
fn every_lambda_target_group_checks_health_and_has_an_unhealthy_targets_alarm() {
    let groups = of_type("AWS::ElasticLoadBalancingV2::TargetGroup");
    assert_eq!(groups.len(), 3);
    let alarms = of_type("AWS::CloudWatch::Alarm");
    for (id, group) in &groups {
        let p = &group["Properties"];
        assert_eq!(p["HealthCheckEnabled"], true, "{id}");
        assert_eq!(p["HealthCheckPath"], "/health", "{id}");
        assert_eq!(p["Matcher"], json!({"HttpCode": "200"}), "{id}");
        let interval = p["HealthCheckIntervalSeconds"].as_u64().unwrap();
        let timeout = p["HealthCheckTimeoutSeconds"].as_u64().unwrap();
        assert!(
            timeout < interval,
            "{id}: timeout {timeout} s >= interval {interval} s"
        );
        assert!((5..=300).contains(&interval), "{id}");
        assert!(p["HealthyThresholdCount"].as_u64().unwrap() >= 2, "{id}");
        assert!(p["UnhealthyThresholdCount"].as_u64().unwrap() >= 2, "{id}");
        let watched = alarms.iter().any(|(_, a)| {
            let a = &a["Properties"];
            a["MetricName"] == "UnHealthyHostCount"
                && a["Threshold"] == 0
                && a["ComparisonOperator"] == "GreaterThanThreshold"
                && a["Dimensions"].as_array().unwrap().contains(&json!(
                    {"Name": "TargetGroup", "Value": {"Fn::GetAtt": format!("{id}.TargetGroupFullName")}}
                ))
        });
        assert!(watched, "no UnHealthyHostCount alarm on {id}");
    }
}

#[test]
fn the_database_exports_its_log_with_slow_statements_lock_waits_and_tls_required() {
    let db = props("Database");
    assert_eq!(db["EnableCloudwatchLogsExports"], json!(["postgresql"]));
    assert_eq!(
        db["DBParameterGroupName"],
        reference("DatabaseParameterGroup")
    );
    let group = props("DatabaseParameterGroup");
    assert_eq!(group["Family"], "postgres15");
    let p = &group["Parameters"];
    assert_eq!(
        p["log_min_duration_statement"],
        reference("SlowStatementMs")
    );
    assert_eq!(p["rds.force_ssl"], "1");
    assert_eq!(p["log_lock_waits"], "1");
    assert_eq!(parameter("SlowStatementMs")["Default"], 500);
    // The export's group exists before the instance, encrypted and with a retention.
    let log = props("DatabaseLogGroup");
    assert_eq!(
        log["LogGroupName"],
        format!(
            "/aws/rds/instance/{}/postgresql",
            db["DBInstanceIdentifier"].as_str().unwrap()
        )
    );
    assert_eq!(log["RetentionInDays"], reference("LogRetentionDays"));
    assert!(depends_on("Database").contains("DatabaseLogGroup"));
}

#[test]
fn vpc_flow_logs_record_all_traffic_to_an_encrypted_group() {
    let flows = of_type("AWS::EC2::FlowLog");
    assert_eq!(flows.len(), 1);
    let p = &flows[0].1["Properties"];
    assert_eq!(p["ResourceType"], "VPC");
    assert_eq!(p["ResourceId"], reference("Vpc"));
    assert_eq!(p["TrafficType"], "ALL");
    assert_eq!(p["LogDestinationType"], "cloud-watch-logs");
    let group = p["LogGroupName"]["Ref"].as_str().unwrap();
    let group = props(group);
    assert_eq!(group["KmsKeyId"], json!({"Fn::GetAtt": "Key.Arn"}));
    assert_eq!(group["RetentionInDays"], reference("LogRetentionDays"));
    let role = p["DeliverLogsPermissionArn"]["Fn::GetAtt"]
        .as_str()
        .unwrap();
    let role = props(role.trim_end_matches(".Arn"));
    assert_eq!(
        role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"],
        json!({"Service": "vpc-flow-logs.amazonaws.com"})
    );
}

#[test]
fn the_admin_paths_answer_only_the_trusted_addresses_when_given() {
    assert_eq!(parameter("AdminAllowedCidrs")["Type"], "CommaDelimitedList");
    assert_eq!(parameter("AdminAllowedCidrs")["Default"], "");
    let set = resource("AdminIpSet");
    assert_eq!(set["Condition"], "AdminIpRestriction");
    assert_eq!(
        set["Properties"]["Addresses"],
        reference("AdminAllowedCidrs")
    );
    assert_eq!(set["Properties"]["Scope"], "REGIONAL");

    let rules = props("WebAcl")["Rules"].as_array().unwrap().clone();
    let rule = rules
        .iter()
        .find(|r| r["Fn::If"][0] == "AdminIpRestriction")
        .expect("an admin IP rule");
    assert_eq!(
        rule["Fn::If"][2],
        reference("AWS::NoValue"),
        "off when no addresses are given"
    );
    let rule = &rule["Fn::If"][1];
    assert_eq!(rule["Action"], json!({"Block": {}}));
    let and = rule["Statement"]["AndStatement"]["Statements"]
        .as_array()
        .unwrap();
    assert_eq!(
        and[0],
        json!({"NotStatement": {"Statement": {"IPSetReferenceStatement": {"Arn": {"Fn::GetAtt": "AdminIpSet.Arn"}}}}})
    );
    let paths: BTreeSet<(String, String)> = and[1]["OrStatement"]["Statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let m = &s["ByteMatchStatement"];
            assert_eq!(m["FieldToMatch"], json!({"UriPath": {}}));
            let transforms: Vec<&str> = m["TextTransformations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["Type"].as_str().unwrap())
                .collect();
            assert!(transforms.contains(&"LOWERCASE"), "{m}");
            (
                m["SearchString"].as_str().unwrap().to_owned(),
                m["PositionalConstraint"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("/key/", "STARTS_WITH"),
        ("/user/", "STARTS_WITH"),
        ("/team/", "STARTS_WITH"),
        ("/spend/", "STARTS_WITH"),
        ("/global/", "STARTS_WITH"),
        ("/scim/", "STARTS_WITH"),
        ("/ui", "EXACTLY"),
        ("/ui/", "STARTS_WITH"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(paths, expected);
    // Every admin route of the key-admin function's listener rules is among them.
    for rule in ["KeyAdminRule", "ConsoleRule"] {
        for pattern in props(rule)["Conditions"][0]["PathPatternConfig"]["Values"]
            .as_array()
            .unwrap()
        {
            let pattern = pattern.as_str().unwrap().trim_end_matches('*');
            assert!(
                expected.iter().any(|(p, _)| p == pattern),
                "{pattern} is not behind the IP set"
            );
        }
    }
}

#[test]
fn deletion_protection_covers_the_alb_and_the_database() {
    assert_eq!(parameter("DeletionProtection")["Default"], "true");
    assert!(
        props("LoadBalancer")["LoadBalancerAttributes"]
            .as_array()
            .unwrap()
            .contains(&json!({"Key": "deletion_protection.enabled", "Value": reference("DeletionProtection")}))
    );
    assert_eq!(
        props("Database")["DeletionProtection"],
        reference("DeletionProtection")
    );
}

#[test]
fn https_answers_carry_hsts() {
    let attributes = props("HttpsListener")["ListenerAttributes"].clone();
    assert_eq!(
        attributes,
        json!([{"Key": "routing.http.response.strict_transport_security.header_value",
                "Value": "max-age=63072000; includeSubDomains"}])
    );
}

#[test]
fn log_retention_cannot_go_below_the_llds_90_days() {
    let retention = parameter("LogRetentionDays");
    assert_eq!(retention["Default"], 90);
    assert_eq!(retention["MinValue"], 90);
    for days in retention["AllowedValues"].as_array().unwrap() {
        assert!(days.as_i64().unwrap() >= 90, "{days}");
    }
}

#[test]
fn the_master_key_is_cached_with_a_ttl_and_a_grace_window() {
    let env = &template()["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(env["LLMLITE_MASTER_KEY_TTL_SECS"], "300");
    assert_eq!(env["LLMLITE_MASTER_KEY_GRACE_SECS"], "3600");
}

#[test]
fn tracing_is_off_by_default_and_the_collector_gets_only_its_otlp_endpoint() {
    let tracing = parameter("Tracing");
    assert_eq!(tracing["Default"], "Off");
    assert_eq!(
        tracing["AllowedValues"],
        json!(["Off", "XRay", "Collector"])
    );
    let conditions = &template()["Conditions"];
    assert_eq!(
        conditions["TracingOn"],
        json!({"Fn::Not": [{"Fn::Equals": [reference("Tracing"), "Off"]}]})
    );
    assert_eq!(
        conditions["TracingCollector"],
        json!({"Fn::Equals": [reference("Tracing"), "Collector"]})
    );
    assert_eq!(
        conditions["HasCollectorLayer"],
        json!({"Fn::And": [{"Condition": "TracingCollector"},
                           {"Fn::Not": [{"Fn::Equals": [reference("CollectorLayerArn"), ""]}]}]})
    );
    let globals = &template()["Globals"]["Function"];
    // Off: Lambda passes an incoming X-Ray header on and records nothing.
    assert_eq!(
        globals["Tracing"],
        json!({"Fn::If": ["TracingOn", "Active", "PassThrough"]})
    );
    assert_eq!(
        globals["Layers"],
        json!({"Fn::If": ["HasCollectorLayer", [reference("CollectorLayerArn")], reference("AWS::NoValue")]})
    );
    // The gateway exports only when the collector is there to receive: the extension's
    // loopback OTLP/HTTP port; else the variable is absent and traces are off.
    let env = &globals["Environment"]["Variables"];
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_ENDPOINT"],
        json!({"Fn::If": ["HasCollectorLayer", "http://localhost:4318", reference("AWS::NoValue")]})
    );
    // X-Ray is reached through an endpoint of its own, only when tracing is on (no NAT).
    let endpoint = resource("XRayEndpoint");
    assert_eq!(endpoint["Condition"], "TracingOn");
    assert_eq!(
        endpoint["Properties"]["ServiceName"],
        json!({"Fn::Sub": "com.amazonaws.${AWS::Region}.xray"})
    );
    let layer = parameter("CollectorLayerArn");
    let pattern = regex_lite(layer["AllowedPattern"].as_str().unwrap());
    assert!(pattern(
        "arn:aws:lambda:eu-west-2:901920570463:layer:aws-otel-collector-arm64-ver-0-117-0:1"
    ));
    assert!(pattern(""));
    assert!(!pattern(
        "arn:aws:lambda:eu-west-2:901920570463:function:collector"
    ));
}

/// A matcher for a parameter's `AllowedPattern`.
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
    let re = regex::Regex::new(pattern).unwrap();
    move |text| re.is_match(text)
}

#[test]
fn company_sign_in_is_configured_on_the_key_admin_function_only_and_its_secret_is_never_in_it() {
    let t = template();
    // The parameters, and the rules that refuse a half-configured sign-in.
    for name in [
        "PublicUrl",
        "OidcIssuer",
        "OidcClientId",
        "OidcScopes",
        "OidcGroupsClaim",
        "OidcRoleMap",
        "OidcTeamMap",
        "ConsoleKeySignIn",
    ] {
        assert!(t["Parameters"][name].is_object(), "{name}");
    }
    assert_eq!(t["Parameters"]["OidcIssuer"]["Default"], "");
    assert!(t["Rules"]["SignInNeedsItsParameters"].is_object());
    assert!(t["Rules"]["KeySignInOffNeedsOidc"].is_object());
    // The variables are the key-admin function's: no other function gets the issuer.
    let env = &props("KeyAdminFunction")["Environment"]["Variables"];
    assert_eq!(
        env["LLMLITE_OIDC_ISSUER"]["Fn::If"],
        json!([
            "HasOidc",
            reference("OidcIssuer"),
            reference("AWS::NoValue")
        ])
    );
    // The client secret by its ARN: the value is read at start-up, never in the environment.
    assert_eq!(
        env["LLMLITE_OIDC_CLIENT_SECRET_ARN"]["Fn::If"][1],
        reference("OidcClientSecret")
    );
    assert!(env.get("LLMLITE_OIDC_CLIENT_SECRET").is_none());
    for (id, function) in of_type("AWS::Serverless::Function") {
        if id != "KeyAdminFunction" {
            let vars = &function["Properties"]["Environment"]["Variables"];
            assert!(vars.get("LLMLITE_OIDC_ISSUER").is_none(), "{id}");
        }
    }
    assert!(
        t["Globals"]["Function"]["Environment"]["Variables"]
            .get("LLMLITE_OIDC_ISSUER")
            .is_none()
    );
    // The secret, its grant (to the key-admin function's role alone) and the NAT exist only
    // with an issuer.
    let secret = &t["Resources"]["OidcClientSecret"];
    assert_eq!(secret["Condition"], "HasOidc");
    assert_eq!(secret["Properties"]["KmsKeyId"], reference("Key"));
    let policy = &t["Resources"]["SignInPolicy"];
    assert_eq!(policy["Condition"], "HasOidc");
    assert_eq!(
        policy["Properties"]["Roles"],
        json!([reference("KeyAdminFunctionRole")])
    );
    assert_eq!(
        policy["Properties"]["PolicyDocument"]["Statement"][0]["Resource"],
        reference("OidcClientSecret")
    );
    // The device sign-in and SCIM reach the key-admin function; the callback is under /ui/*.
    let rule = &props("SignInRule");
    assert_eq!(
        rule["Conditions"][0]["PathPatternConfig"]["Values"],
        json!(["/oauth/*", "/scim/*"])
    );
    assert_eq!(
        rule["Actions"][0]["TargetGroupArn"],
        reference("KeyAdminTargetGroup")
    );
    assert_eq!(
        t["Outputs"]["OidcRedirectUri"]["Value"],
        json!({"Fn::Sub": "${PublicUrl}/ui/oidc/callback"})
    );
}
