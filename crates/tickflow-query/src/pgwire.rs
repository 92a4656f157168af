//! The Postgres-wire SQL endpoint: psql, psycopg, node-postgres, JDBC and Grafana's
//! PostgreSQL data source connect to a running pipeline and query its tables.
//!
//! The protocol (simple and extended queries, parameters, prepared statements, `SET`,
//! `SHOW`, transactions, cursors), the Arrow-to-Postgres types and the `pg_catalog` tables
//! that psql's `\d` and Grafana's table list read come from `datafusion-postgres`. tickflow
//! adds the session ([`QueryEngine::live_session`](crate::QueryEngine::live_session)),
//! whose tables are read anew at every scan, and a rule that the endpoint is read-only.

mod connection;

use std::sync::Arc;

pub use connection::Limits;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{SetExpr, Statement};
use datafusion_postgres::DfSessionService;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::auth::sasl::SCRAM_SHA_256_METHOD;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{
    self, ScramServerAuth, ScramServerAuthWaitingForClientFinal,
};
use datafusion_postgres::pgwire::api::auth::{
    DefaultServerParameterProvider, Password, StartupHandler, finish_authentication,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::{ClientInfo, PgWireConnectionState, PgWireServerHandlers};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use futures::SinkExt as _;
use tickflow_core::auth::{Limiter, same_secret};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The password every client must give before its first statement, and where its failures
/// are counted (docs/security.md).
#[derive(Debug)]
pub struct Login {
    pub password: String,
    /// SCRAM-SHA-256 (the password never crosses the wire) rather than the password as it is.
    pub scram: bool,
    /// Shared with the HTTP API: an address that failed too often is refused unasked.
    pub limiter: Arc<Limiter>,
    /// Wrong passwords, and connections refused by the limiter.
    pub failures: Arc<std::sync::atomic::AtomicU64>,
    pub limited: Arc<std::sync::atomic::AtomicU64>,
}

/// Who may connect and how many at once.
pub struct Access {
    /// Without it, any client may connect (the endpoint is on loopback).
    pub login: Option<Login>,
    /// Connections served at once; past it a new one is closed on arrival.
    pub max_connections: usize,
    /// Connections one client address may hold at once.
    pub max_per_address: usize,
    /// Connections closed on arrival: past the cap, and past an address's share.
    pub refused: Arc<std::sync::atomic::AtomicU64>,
    pub refused_per_address: Arc<std::sync::atomic::AtomicU64>,
    /// When set, TLS is offered and required: a client that starts in plain text without
    /// asking for it (`sslmode=disable`) is refused before its password.
    pub tls: Option<datafusion_postgres::pgwire::tokio::TlsAcceptor>,
    /// How long and how much each client may take.
    pub limits: Limits,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("login", &self.login)
            .field("max_connections", &self.max_connections)
            .field("max_per_address", &self.max_per_address)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Serves `session` on `listener` until `stop` turns true; each connection runs on a task
/// of its own.
pub async fn serve(
    listener: TcpListener,
    session: Arc<SessionContext>,
    access: Access,
    mut stop: watch::Receiver<bool>,
) {
    let Access {
        login,
        max_connections,
        max_per_address,
        refused,
        refused_per_address,
        tls,
        limits,
    } = access;
    let limits = Arc::new(limits);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let shares = tickflow_core::auth::Shares::new(max_per_address);
    let mut hooks: Vec<Arc<dyn QueryHook>> = Vec::new();
    if login.is_some() {
        hooks.push(Arc::new(SignedIn));
    }
    hooks.extend([
        Arc::new(ReadOnly) as Arc<dyn QueryHook>,
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ]);
    let mut parameters = DefaultServerParameterProvider::default();
    // psql chooses the catalog queries it sends by this; 15 is what tickflow answers.
    parameters.server_version = SERVER_VERSION.into();
    parameters.default_transaction_read_only = true;
    let scram = login
        .as_ref()
        .filter(|l| l.scram)
        .map(|l| Scram::new(&l.password));
    let handlers = Arc::new(Handlers {
        service: Arc::new(DfSessionService::new_with_hooks(session, hooks)),
        startup: Arc::new(Startup {
            parameters,
            login,
            scram,
            tls_required: tls.is_some(),
        }),
    });
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let Some(share) = tickflow_core::auth::Shares::take(&shares, peer.ip()) else {
                        refused_per_address.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        drop(socket);
                        continue;
                    };
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        drop(socket);
                        continue;
                    };
                    let handlers = Arc::clone(&handlers);
                    let tls = tls.clone();
                    let limits = Arc::clone(&limits);
                    tokio::spawn(async move {
                        let _slots = (slot, share);
                        if let Err(e) = connection::serve(socket, tls, handlers, &limits).await
                        {
                            tracing::debug!(%peer, error = %e, "Postgres-wire connection ended");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "Postgres-wire accept failed"),
            },
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
        }
    }
}

/// What the endpoint reports as `server_version`.
pub const SERVER_VERSION: &str = "15.0 (tickflow)";

struct Handlers {
    service: Arc<DfSessionService>,
    startup: Arc<Startup>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::SimpleQueryHandler> {
        Arc::clone(&self.service)
    }

    fn extended_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::ExtendedQueryHandler> {
        Arc::clone(&self.service)
    }

    /// Asked once per connection: a SCRAM exchange's state is the connection's own.
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Handshake {
            startup: Arc::clone(&self.startup),
            scram: std::sync::Mutex::new(None),
        })
    }
}

/// The startup handshake: SCRAM-SHA-256 or the password itself when `login` is set, none
/// otherwise.
struct Startup {
    parameters: DefaultServerParameterProvider,
    login: Option<Login>,
    /// Set when clients sign in with SCRAM-SHA-256.
    scram: Option<Scram>,
    tls_required: bool,
}

/// The password as SCRAM-SHA-256 checks it: salted and hashed once, when the endpoint
/// starts (RFC 5802, RFC 7677).
struct Scram {
    server: ScramServerAuth,
    salted: Password,
}

impl Scram {
    /// PostgreSQL's own iteration count.
    const ITERATIONS: usize = 4096;

    fn new(password: &str) -> Self {
        let salt = scram::random_nonce().into_bytes();
        let salted = scram::gen_salted_password(password, &salt, Self::ITERATIONS);
        let mut server = ScramServerAuth::new();
        server.set_iterations(Self::ITERATIONS);
        Self {
            server,
            salted: Password::new(Some(salt), salted),
        }
    }
}

/// One connection's handshake.
struct Handshake {
    startup: Arc<Startup>,
    /// Between the server's first SCRAM message and the client's proof.
    scram: std::sync::Mutex<Option<ScramServerAuthWaitingForClientFinal>>,
}

/// The limiter's name for this endpoint: its failures do not hold back the HTTP API's.
const SURFACE: &str = "pgwire";

/// Set in a connection's metadata once its password matched.
const SIGNED_IN: &str = "tickflow.signed_in";

/// The refusal of an address that failed too often, counted.
fn held_off(login: &Login, ip: std::net::IpAddr) -> Option<PgWireError> {
    let wait = login.limiter.blocked(ip, SURFACE)?;
    login
        .limited
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // 53300: too_many_connections, the nearest PostgreSQL has.
    Some(fatal(
        "53300",
        format!(
            "too many failed attempts from this address: try again in {} s",
            wait.as_secs().max(1)
        ),
    ))
}

/// Refuses every statement of a connection that did not give the password. pgwire answers a
/// failed startup with an error but goes on reading the socket, so a query sent right after
/// a wrong password would otherwise run.
#[derive(Debug)]
struct SignedIn;

fn signed_in(client: &(dyn ClientInfo + Send + Sync)) -> Option<PgWireError> {
    (client.metadata().get(SIGNED_IN).map(String::as_str) != Some("yes")).then(|| {
        // 28000: invalid_authorization_specification.
        fatal("28000", "not signed in: give [pgwire] password".into())
    })
}

#[async_trait]
impl QueryHook for SignedIn {
    async fn handle_simple_query(
        &self,
        _statement: &Statement,
        _session: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        signed_in(&*client).map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _session: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        signed_in(client).map(Err)
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _session: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        signed_in(&*client).map(Err)
    }
}

/// An error sent to the client before the session starts (`FATAL`, closing it).
fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message,
    )))
}

#[async_trait]
impl StartupHandler for Handshake {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let startup = &self.startup;
        let ip = client.socket_addr().ip();
        match (message, &startup.login) {
            (PgWireFrontendMessage::Startup(ref hello), login) => {
                if startup.tls_required && !client.is_secure() {
                    // 28000: invalid_authorization_specification, as PostgreSQL answers a
                    // client that no `hostssl` line lets in.
                    return Err(fatal(
                        "28000",
                        "TLS is required: connect with sslmode=require or verify-full".into(),
                    ));
                }
                if hello
                    .parameters
                    .iter()
                    .any(|(k, v)| format!("{k}{v}").contains(char::REPLACEMENT_CHARACTER))
                {
                    // pgwire reads them lossily: a user or database name that is not UTF-8
                    // would otherwise arrive as another name.
                    return Err(fatal(
                        "22021",
                        "invalid byte sequence for encoding \"UTF8\": the startup parameters are not UTF-8 text".into(),
                    ));
                }
                protocol_negotiation(client, hello).await?;
                save_startup_parameters_to_metadata(client, hello);
                let Some(login) = login else {
                    return finish_authentication(client, &startup.parameters).await;
                };
                if let Some(refused) = held_off(login, ip) {
                    return Err(refused);
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                let ask = if startup.scram.is_some() {
                    Authentication::SASL(vec![SCRAM_SHA_256_METHOD.to_string()])
                } else {
                    Authentication::CleartextPassword
                };
                client
                    .send(PgWireBackendMessage::Authentication(ask))
                    .await?;
            }
            (PgWireFrontendMessage::PasswordMessageFamily(given), Some(login)) => {
                // Asked again: a client may hold many connections open over the round trip.
                if let Some(refused) = held_off(login, ip) {
                    return Err(refused);
                }
                let signed_in = match &startup.scram {
                    None => {
                        let given = given.into_password()?;
                        same_secret(given.password.as_bytes(), login.password.as_bytes())
                    }
                    Some(scram) => {
                        let waiting = self
                            .scram
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .take();
                        let Some(waiting) = waiting else {
                            // The client's first message: its nonce, answered with ours, the
                            // salt and the iterations.
                            let (mechanism, data) = initial_response(given)?;
                            if mechanism != SCRAM_SHA_256_METHOD {
                                return Err(fatal(
                                    "28000",
                                    format!(
                                        "unsupported SASL mechanism {mechanism:?}: this server offers {SCRAM_SHA_256_METHOD}"
                                    ),
                                ));
                            }
                            let (server_first, next) = scram
                                .server
                                .on_client_first_message(&data, scram.salted.clone())?;
                            *self
                                .scram
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(next);
                            client
                                .send(PgWireBackendMessage::Authentication(
                                    Authentication::SASLContinue(server_first.into()),
                                ))
                                .await?;
                            return Ok(());
                        };
                        // The client's proof: checked, and answered with the server's own.
                        let proof = given.into_sasl_response()?;
                        match waiting.on_client_final_message(&proof.data) {
                            Ok(server_final) => {
                                client
                                    .send(PgWireBackendMessage::Authentication(
                                        Authentication::SASLFinal(server_final.into()),
                                    ))
                                    .await?;
                                true
                            }
                            Err(PgWireError::InvalidPassword(_)) => false,
                            Err(e) => return Err(e),
                        }
                    }
                };
                if signed_in {
                    client
                        .metadata_mut()
                        .insert(SIGNED_IN.to_string(), "yes".to_string());
                    finish_authentication(client, &startup.parameters).await?;
                } else {
                    login.limiter.failed(ip, SURFACE);
                    login
                        .failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(%ip, "Postgres-wire client gave a wrong password");
                    // 28P01: invalid_password.
                    return Err(fatal(
                        "28P01",
                        "password authentication failed: give [pgwire] password".into(),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The mechanism and data of a client's SASLInitialResponse. Read here rather than by
/// pgwire, whose decoder trusts the lengths in the message and panics on a short one: a
/// client that sends its password as it is (not knowing SCRAM), or anything malformed,
/// gets a protocol error instead.
fn initial_response(given: PasswordMessageFamily) -> PgWireResult<(String, bytes::Bytes)> {
    let malformed = || {
        // 08P01: protocol_violation.
        fatal(
            "08P01",
            "expected a SASLInitialResponse for SCRAM-SHA-256 (a client that sends the password as it is needs [pgwire] auth = \"password\")".into(),
        )
    };
    let body = match given {
        PasswordMessageFamily::Raw(body) => body.freeze(),
        PasswordMessageFamily::SASLInitialResponse(first) => {
            return Ok((first.auth_method, first.data.unwrap_or_default()));
        }
        _ => return Err(malformed()),
    };
    let end = body.iter().position(|b| *b == 0).ok_or_else(malformed)?;
    let mechanism = std::str::from_utf8(&body[..end])
        .map_err(|_| malformed())?
        .to_string();
    let rest = body.slice(end + 1..);
    let (len, data) = rest.split_first_chunk::<4>().ok_or_else(malformed)?;
    let data = match i32::from_be_bytes(*len) {
        -1 => bytes::Bytes::new(),
        n => {
            let n = usize::try_from(n).map_err(|_| malformed())?;
            if n > data.len() {
                return Err(malformed());
            }
            rest.slice(4..4 + n)
        }
    };
    Ok((mechanism, data))
}

/// Refuses every statement that is not a query, `EXPLAIN`, `SHOW`, `SET`, a transaction or
/// a cursor: the endpoint reads the lake and never changes it or touches files.
#[derive(Debug)]
struct ReadOnly;

/// The refusal of `statement`, if it is refused.
pub fn refusal(statement: &Statement) -> Option<String> {
    let allowed = match statement {
        Statement::Query(query) => !selects_into(&query.body),
        Statement::Explain { statement, .. } => return refusal(statement),
        // A cursor runs its query: the same rule holds for it.
        Statement::Declare { stmts } => stmts.iter().all(|d| {
            d.for_query
                .as_ref()
                .is_none_or(|query| !selects_into(&query.body))
        }),
        // DataFusion's own settings (`datafusion.*`) belong to the one session every
        // connection shares: a client must not lift its memory limit or move its spill files.
        Statement::Set(_) | Statement::Reset(_) => !statement
            .to_string()
            .to_ascii_lowercase()
            .contains("datafusion."),
        Statement::ExplainTable { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. } => true,
        _ => false,
    };
    if allowed {
        return None;
    }
    let text = statement.to_string();
    let what: String = text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase();
    Some(format!(
        "tickflow's SQL is read-only: {what} is refused; SELECT, EXPLAIN, SHOW and SET are allowed"
    ))
}

fn selects_into(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(select) => select.into.is_some(),
        SetExpr::Query(query) => selects_into(&query.body),
        SetExpr::SetOperation { left, right, .. } => selects_into(left) || selects_into(right),
        _ => false,
    }
}

fn refused(statement: &Statement) -> Option<PgWireError> {
    if statement.to_string().contains(char::REPLACEMENT_CHARACTER) {
        // pgwire reads a statement's bytes lossily: bytes that are not UTF-8 arrive as
        // U+FFFD, and a literal compared with them would match something else. 22021:
        // character_not_in_repertoire, PostgreSQL's answer to such bytes.
        return Some(PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "22021".into(),
            "invalid byte sequence for encoding \"UTF8\": the statement is not UTF-8 text".into(),
        ))));
    }
    refusal(statement).map(|message| {
        // 25006: read_only_sql_transaction, what PostgreSQL answers on a read-only replica.
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "25006".into(),
            message,
        )))
    })
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        refused(statement).map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        refused(statement).map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _session: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        refused(statement).map(Err)
    }
}

/// The server settings `current_setting(name)` answers: what psql, pgx (Grafana) and JDBC
/// read at connect time. Grafana's data-source page asks for `server_version_num`.
const SETTINGS: [(&str, &str); 11] = [
    ("server_version", SERVER_VERSION),
    ("server_version_num", "150000"),
    ("search_path", "public"),
    ("standard_conforming_strings", "on"),
    ("client_encoding", "UTF8"),
    ("server_encoding", "UTF8"),
    ("timezone", "UTC"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_read_only", "on"),
    ("transaction_read_only", "on"),
    ("statement_timeout", "0"),
];

/// `current_setting(name)`, PostgreSQL's function, over [`SETTINGS`].
pub(crate) fn current_setting() -> datafusion::logical_expr::ScalarUDF {
    use arrow::array::{Array, StringArray};
    use arrow::datatypes::DataType;
    use datafusion::common::{DataFusionError, ScalarValue};
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};

    let lookup = |name: &str| -> datafusion::error::Result<String> {
        SETTINGS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| (*v).to_string())
            .ok_or_else(|| {
                DataFusionError::Execution(format!(
                    "unrecognized configuration parameter \"{name}\""
                ))
            })
    };
    create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| match &args[0] {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(name))) => Ok(ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(lookup(name)?)),
            )),
            ColumnarValue::Scalar(_) => Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None))),
            ColumnarValue::Array(names) => {
                let names = names
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| {
                        DataFusionError::Execution("current_setting takes text".into())
                    })?;
                let values = (0..names.len())
                    .map(|i| {
                        (!names.is_null(i))
                            .then(|| lookup(names.value(i)))
                            .transpose()
                    })
                    .collect::<datafusion::error::Result<StringArray>>()?;
                Ok(ColumnarValue::Array(Arc::new(values)))
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    #[test]
    fn a_sasl_initial_response_is_read_and_a_malformed_one_is_refused_without_a_panic() {
        let raw = |b: &[u8]| PasswordMessageFamily::Raw(bytes::BytesMut::from(b));
        let (mechanism, data) = initial_response(raw(b"SCRAM-SHA-256\0\0\0\0\x05n,,n=")).unwrap();
        assert_eq!(
            (mechanism.as_str(), &data[..]),
            ("SCRAM-SHA-256", &b"n,,n="[..])
        );
        let (_, data) = initial_response(raw(b"SCRAM-SHA-256\0\xff\xff\xff\xff")).unwrap();
        assert!(data.is_empty(), "-1: no data");
        for malformed in [
            &b"the-password-itself\0"[..], // a client that sends the password as it is
            b"SCRAM-SHA-256",              // no NUL
            b"SCRAM-SHA-256\0\0\0",        // a cut length
            b"SCRAM-SHA-256\0\0\0\0\x09n,,", // longer than what follows
            b"SCRAM-SHA-256\0\x80\0\0\0",  // negative
            b"\xff\xfe\0\0\0\0\0",         // not UTF-8
        ] {
            let e = initial_response(raw(malformed)).unwrap_err().to_string();
            assert!(e.contains("SASLInitialResponse"), "{malformed:?}: {e}");
        }
    }

    fn check(sql: &str) -> Option<String> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        refusal(&statements[0])
    }

    #[test]
    fn reads_pass_and_everything_else_is_refused_by_name() {
        for sql in [
            "SELECT * FROM trades",
            "WITH t AS (SELECT 1) SELECT * FROM t UNION ALL SELECT 2",
            "EXPLAIN SELECT 1",
            "SHOW server_version",
            "SET statement_timeout = 1000",
            "BEGIN",
            "COMMIT",
            "DECLARE c CURSOR FOR SELECT * FROM trades",
        ] {
            assert_eq!(check(sql), None, "{sql}");
        }
        for (sql, named) in [
            ("INSERT INTO trades VALUES (1)", "INSERT INTO"),
            ("DELETE FROM trades", "DELETE FROM"),
            ("CREATE TABLE x (a int)", "CREATE TABLE"),
            ("DROP TABLE trades", "DROP TABLE"),
            ("COPY trades TO '/tmp/x.csv'", "COPY TRADES"),
            ("SELECT * INTO copy_of_trades FROM trades", "SELECT *"),
            ("EXPLAIN DELETE FROM trades", "DELETE FROM"),
            (
                "DECLARE c CURSOR FOR SELECT * INTO x FROM trades",
                "DECLARE C",
            ),
            (
                "SET datafusion.runtime.memory_limit = '1000G'",
                "SET DATAFUSION.RUNTIME.MEMORY_LIMIT",
            ),
            (
                "RESET datafusion.runtime.memory_limit",
                "RESET DATAFUSION.RUNTIME.MEMORY_LIMIT",
            ),
        ] {
            let refused = check(sql).unwrap_or_else(|| panic!("{sql} passed"));
            assert!(refused.contains(named), "{sql}: {refused}");
            assert!(refused.contains("read-only"), "{refused}");
        }
    }
}
