//! The database's two roles, made and kept by the migrations custom resource ([`crate::deploy`]):
//!
//! - the **owner** (`llmlite_owner`) owns the schema's objects and runs the migrations;
//! - the **application** role (`llmlite_app`), which every function connects as, may only read
//!   and write rows and call the `llmlite_*` functions: no DDL (it owns nothing, may not create
//!   in the schema, and may not make temporary objects), and the admin-action audit table is
//!   append-only to it (it may set `shipped_at`, which the audit shipper needs, and nothing else).
//!
//! The RDS master user (the custom resource's `AdminUser`) only creates the roles and hands the
//! objects it owns to the owner (a stack that predates the roles ran its migrations as the
//! master). Each role's password is in its own Secrets Manager secret, which RDS Proxy logs in
//! with and the hosted rotation function rotates; a role is given its secret's password only
//! when it is created, so a deploy never undoes a rotation. The password travels to the server
//! only as a SCRAM verifier ([`crate::crypto::scram_sha256_verifier`]): a statement log would
//! show no password.
//!
//! Role names and passwords cannot be bind parameters of `CREATE ROLE`; names are checked
//! against a strict identifier pattern and passwords against printable ASCII before any SQL is
//! built, and identifiers are quoted by the server (`format('%I')`).

use rand::RngCore;
use sqlx::PgConnection;

use crate::crypto::{SCRAM_ITERATIONS, scram_sha256_verifier};

/// The admin-action audit table: append-only to the application role.
pub const AUDIT_TABLE: &str = "llmlite_admin_action";
/// The one column of [`AUDIT_TABLE`] the application role may change.
pub const AUDIT_SHIPPED_COLUMN: &str = "shipped_at";

/// Why a role's login or privileges could not be set up. No message holds a password or the
/// statements (they carry the SCRAM verifiers); a database error shows its message and SQLSTATE.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("`{0}` is not a usable role name (lower-case letters, digits and _, at most 63)")]
    BadName(String),
    #[error("the password in {0}'s secret must be at least 16 printable ASCII characters")]
    BadPassword(String),
    #[error("the secret is not JSON with username and password")]
    NotJson,
    #[error("the secret has no {0}")]
    MissingField(&'static str),
    #[error("the owner and application roles must differ")]
    SameRoles,
    #[error("creating the database roles failed: {}", sql_error(.0))]
    Bootstrap(sqlx::Error),
    #[error("granting the application role failed: {}", sql_error(.0))]
    Grant(sqlx::Error),
}

/// A role and the password its secret holds.
#[derive(Clone)]
pub struct Login {
    pub name: String,
    password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").field("name", &self.name).finish()
    }
}

impl Login {
    /// A role login from a secret's `username` and `password`, checked.
    pub fn new(name: &str, password: &str) -> Result<Self, RoleError> {
        check_identifier(name)?;
        // SASLprep leaves printable ASCII as it is, so the verifier computed here is the one the
        // server would compute; anything else is refused rather than normalised by hand.
        if password.len() < 16 || !password.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            return Err(RoleError::BadPassword(name.to_owned()));
        }
        Ok(Login {
            name: name.to_owned(),
            password: password.to_owned(),
        })
    }

    /// From a secret's JSON text (`{"username": ..., "password": ...}`, the shape RDS and the
    /// hosted rotation functions use).
    pub fn from_secret(text: &str) -> Result<Self, RoleError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| RoleError::NotJson)?;
        let field = |name: &'static str| {
            value
                .get(name)
                .and_then(|v| v.as_str())
                .ok_or(RoleError::MissingField(name))
        };
        Login::new(field("username")?, field("password")?)
    }
}

/// A role name: a lower-case SQL identifier that needs no quoting.
pub fn check_identifier(name: &str) -> Result<(), RoleError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && name.len() <= 63 && !name.starts_with("pg_") {
        Ok(())
    } else {
        Err(RoleError::BadName(name.chars().take(64).collect()))
    }
}

/// Runs `sql` (no parameters, no rows) on `conn`.
async fn execute(conn: &mut PgConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await
        .map(|_| ())
}

/// As the master user, in one transaction: creates `owner` and `app` when missing (with their
/// secrets' passwords), lets the master act as the owner, gives the owner the right to create in
/// the schema, takes `CREATE` on the schema and `TEMPORARY` on the database from everyone else,
/// and hands every object of the schema the master owns to the owner.
pub async fn bootstrap(
    conn: &mut PgConnection,
    owner: &Login,
    app: &Login,
) -> Result<(), RoleError> {
    if owner.name == app.name {
        return Err(RoleError::SameRoles);
    }
    let mut sql = String::from("BEGIN;\n");
    for login in [owner, app] {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let verifier = scram_sha256_verifier(&login.password, &salt, SCRAM_ITERATIONS);
        // A concurrent deploy (or test) may create the same role between the check and the
        // CREATE: either error means it exists, and its password is then left alone.
        sql.push_str(&format!(
            "DO $roles$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN
                 CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
                   PASSWORD '{verifier}';
               END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $roles$;\n",
            name = login.name,
        ));
    }
    sql.push_str(&format!(
        "GRANT {owner} TO CURRENT_USER;
         REVOKE CREATE ON SCHEMA public FROM PUBLIC;
         GRANT USAGE, CREATE ON SCHEMA public TO {owner};
         DO $$ BEGIN
           EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
           EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO {owner}', current_database());
         END $$;
         DO $$ DECLARE o record; BEGIN
           -- Tables, views and standalone sequences (a column's sequence follows its table).
           FOR o IN SELECT c.relname, c.relkind FROM pg_class c
                     WHERE c.relnamespace = 'public'::regnamespace
                       AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = CURRENT_USER)
                       AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                        WHERE d.classid = 'pg_class'::regclass
                                          AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
           LOOP
             EXECUTE format('ALTER %s %I OWNER TO {owner}',
               CASE o.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                 WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
               o.relname);
           END LOOP;
           FOR o IN SELECT p.oid::regprocedure AS signature, p.prokind FROM pg_proc p
                     WHERE p.pronamespace = 'public'::regnamespace
                       AND p.proowner = (SELECT oid FROM pg_roles WHERE rolname = CURRENT_USER)
           LOOP
             EXECUTE format('ALTER %s %s OWNER TO {owner}',
               CASE o.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE'
                 ELSE 'FUNCTION' END,
               o.signature);
           END LOOP;
           -- Enums, domains and composite types (a table's row type follows its table).
           FOR o IN SELECT t.typname FROM pg_type t
                     WHERE t.typnamespace = 'public'::regnamespace
                       AND t.typowner = (SELECT oid FROM pg_roles WHERE rolname = CURRENT_USER)
                       AND (t.typtype IN ('e', 'd')
                            OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class
                                                      WHERE oid = t.typrelid) = 'c'))
           LOOP
             EXECUTE format('ALTER TYPE %I OWNER TO {owner}', o.typname);
           END LOOP;
         END $$;
         COMMIT;",
        owner = owner.name,
    ));
    // Never the statement in the error: it holds the verifiers.
    execute(conn, sql).await.map_err(RoleError::Bootstrap)
}

/// As the owner, after migrating: the application role's privileges, in one transaction, and
/// the same by default for whatever the owner creates later.
pub async fn grant_app(conn: &mut PgConnection, app: &str) -> Result<(), RoleError> {
    check_identifier(app)?;
    let sql = format!(
        "BEGIN;
         GRANT USAGE ON SCHEMA public TO {app};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app};
         REVOKE ALL ON TABLE _sqlx_migrations FROM {app};
         GRANT SELECT ON TABLE _sqlx_migrations TO {app};
         REVOKE UPDATE, DELETE, TRUNCATE ON TABLE {AUDIT_TABLE} FROM {app};
         GRANT UPDATE ({AUDIT_SHIPPED_COLUMN}) ON TABLE {AUDIT_TABLE} TO {app};
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app};
         GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {app};
         ALTER DEFAULT PRIVILEGES IN SCHEMA public
           GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app};
         ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {app};
         ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO {app};
         COMMIT;"
    );
    execute(conn, sql).await.map_err(RoleError::Grant)
}

/// A database error's message and code, without the statement.
fn sql_error(e: &sqlx::Error) -> String {
    match e.as_database_error() {
        Some(db) => format!(
            "{} (SQLSTATE {})",
            db.message(),
            db.code().unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_must_be_plain_identifiers() {
        for ok in ["llmlite_app", "llmlite_owner", "_x", "a1"] {
            assert!(check_identifier(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "App",
            "1abc",
            "a-b",
            "a b",
            "a;drop",
            "a\"b",
            "pg_monitor",
            "é",
            "a\0",
        ] {
            assert!(check_identifier(bad).is_err(), "{bad:?}");
        }
        assert!(check_identifier(&"a".repeat(64)).is_err());
    }

    #[test]
    fn secrets_are_read_and_checked_without_echoing_the_password() {
        let login =
            Login::from_secret(r#"{"username":"llmlite_app","password":"Abcdefghijklmnop1234"}"#)
                .unwrap();
        assert_eq!(login.name, "llmlite_app");
        assert!(!format!("{login:?}").contains("Abcdefgh"));
        for bad in [
            r#"{"username":"llmlite_app"}"#,
            r#"{"username":"llmlite_app","password":"short"}"#,
            "{\"username\":\"llmlite_app\",\"password\":\"tab\\tin the password, long\"}",
            r#"{"username":"llmlite_app","password":"non-ASCII pässword, long enough"}"#,
            r#"{"username":"Robert'); DROP TABLE x;--","password":"Abcdefghijklmnop1234"}"#,
            "not json",
        ] {
            let err = Login::from_secret(bad).map(|_| ()).unwrap_err().to_string();
            assert!(!err.contains("Abcdefghijklmnop1234"), "{err}");
        }
    }
}
