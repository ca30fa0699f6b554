//! Who is calling, and may they.
//!
//! The unix socket is local and guarded by file permissions: its callers act as a local
//! ADMIN named `local`. On TCP every route but the public ones needs either the session
//! cookie from `POST /api/rest/users/login` or HTTP basic credentials; anything else is
//! 401 `UNAUTHORIZED` with a `WWW-Authenticate` challenge.
//!
//! Every password check, of basic credentials or of `login`, is first admitted by the
//! login limiter ([`crate::mgmt::login_limit`], per name and per client address); a
//! refused attempt is answered at once with 429 `TOO_MANY_LOGIN_ATTEMPTS` and
//! `Retry-After`, without running argon2. A failure raises `USER_LOGIN_FAILURE`, and the
//! failure that starts a lockout `USER_LOGIN_LOCKED_OUT`. The one exception: a keep-alive
//! connection that already proved the same `Authorization` value
//! ([`Request::verified_authorization`]) is not limited again, so a client in the middle
//! of its work keeps working while someone else guesses its password.
//!
//! Roles, coarse check per route ([`Access`]):
//!
//! | access          | ADMIN | POOL_ADMIN        | READ_ONLY | TECHNICIAN |
//! |-----------------|-------|-------------------|-----------|------------|
//! | `Public`        | yes   | yes               | yes       | yes        |
//! | `Authenticated` | yes   | yes               | yes       | yes        |
//! | `PoolAdmin`     | yes   | owned pools only  | no        | no         |
//! | `Technician`    | yes   | no                | no        | yes        |
//! | `Admin`         | yes   | no                | no        | no         |
//!
//! The "owned pools only" part is checked by the handler once it knows the pool
//! ([`require_pool_owner`]), before it changes anything.

use base64::Engine;

// cycle: a request is checked against its row of the route table, whose rows name the
// access rules defined here.
use super::{Mgmt, error_response, routes::Route};
use crate::mgmt::api::MgmtError;
use crate::mgmt::http::{Request, Response};
use crate::mgmt::login_limit::{ADDRESS_FAILURES, Lockout, NAME_FAILURES, Refusal};
use crate::mgmt::users::{AuthFailure, Role, SESSION_COOKIE, UserInfo};

/// Where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The node's unix socket.
    Local,
    /// A TCP connection.
    Network,
}

/// Who a route admits (see the module doc's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    Authenticated,
    PoolAdmin,
    /// Service actions on the hardware (failing and recovering controllers).
    Technician,
    Admin,
}

impl Access {
    pub fn admits(self, role: Role) -> bool {
        match self {
            Access::Public | Access::Authenticated => true,
            Access::PoolAdmin => matches!(role, Role::Admin | Role::PoolAdmin),
            Access::Technician => matches!(role, Role::Admin | Role::Technician),
            Access::Admin => role == Role::Admin,
        }
    }

    /// The roles admitted, for the OpenAPI description.
    pub fn roles(self) -> Vec<&'static str> {
        [
            Role::Admin,
            Role::PoolAdmin,
            Role::ReadOnly,
            Role::Technician,
        ]
        .into_iter()
        .filter(|role| self.admits(*role))
        .map(Role::as_str)
        .collect()
    }
}

/// The identified caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    /// `None` for the local socket's administrator and anonymous callers.
    pub user_id: Option<u32>,
    /// `None` for an anonymous caller of a public route.
    pub role: Option<Role>,
    /// The session token the request carried, if any.
    pub session: Option<String>,
}

impl Caller {
    fn local() -> Caller {
        Caller {
            name: "local".into(),
            user_id: None,
            role: Some(Role::Admin),
            session: None,
        }
    }

    fn anonymous() -> Caller {
        Caller {
            name: String::new(),
            user_id: None,
            role: None,
            session: None,
        }
    }

    fn user(user: &UserInfo, session: Option<String>) -> Caller {
        Caller {
            name: user.name.clone(),
            user_id: Some(user.id),
            role: Some(user.role),
            session,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Some(Role::Admin)
    }
}

/// Identifies the caller, or answers 401. Public routes admit anonymous callers but still
/// identify those who send credentials.
pub fn identify(
    mgmt: &Mgmt,
    request: &Request,
    origin: Origin,
    access: Access,
) -> Result<Caller, Response> {
    if origin == Origin::Local {
        return Ok(Caller::local());
    }
    if let Some(token) = request.cookie(SESSION_COOKIE)
        && let Some(user) = mgmt.users.session(token)
    {
        return Ok(Caller::user(&user, Some(token.to_owned())));
    }
    match basic_credentials(request) {
        Some(Ok((name, password))) => {
            if request.verified_authorization
                && let Ok(user) = mgmt.users.authenticate_basic(&name, &password)
            {
                return Ok(Caller::user(&user, None));
            }
            match check_password(mgmt, request, &name, || {
                mgmt.users.authenticate_basic(&name, &password)
            }) {
                Ok(user) => Ok(Caller::user(&user, None)),
                Err(PasswordRefusal::Failed(error)) => Err(unauthorized(&error)),
                Err(PasswordRefusal::Limited(response)) => Err(response),
            }
        }
        Some(Err(error)) => Err(unauthorized(&error)),
        None if access == Access::Public => Ok(Caller::anonymous()),
        None => Err(unauthorized(&MgmtError::new(
            "UNAUTHORIZED",
            401,
            "this request needs a user: send HTTP basic credentials or log in with POST /api/rest/users/login",
        ))),
    }
}

/// Why [`check_password`] did not let a caller in.
pub enum PasswordRefusal {
    /// The check ran and failed: answer this 401.
    Failed(MgmtError),
    /// The limiter refused the attempt: answer this 429 as it is.
    Limited(Response),
}

/// Runs the password check `check` for `name` if the login limiter admits it, and reports
/// its outcome to the limiter; failures raise events (see the module doc).
pub fn check_password<T>(
    mgmt: &Mgmt,
    request: &Request,
    name: &str,
    check: impl FnOnce() -> Result<T, AuthFailure>,
) -> Result<T, PasswordRefusal> {
    let attempt = match mgmt.limiter.admit(name, request.peer) {
        Ok(attempt) => attempt,
        Err(refusal) => return Err(PasswordRefusal::Limited(too_many_attempts(&refusal))),
    };
    match check() {
        Ok(value) => {
            mgmt.limiter.succeeded(attempt);
            Ok(value)
        }
        Err(failure) => {
            let error = login_failed(mgmt, name, &failure);
            for lockout in mgmt.limiter.failed(attempt) {
                let what = match &lockout {
                    Lockout::Name(name) => format!("user {name:?}"),
                    Lockout::Address(address) => format!("client address {address}"),
                };
                mgmt.events.raise(
                    "USER_LOGIN_LOCKED_OUT",
                    format!(
                        "logins for {what} are refused for {} s after {} failed logins",
                        mgmt.limiter.lockout().as_secs(),
                        match lockout {
                            Lockout::Name(_) => NAME_FAILURES,
                            Lockout::Address(_) => ADDRESS_FAILURES,
                        }
                    ),
                    None,
                    Some(name),
                );
            }
            Err(PasswordRefusal::Failed(error))
        }
    }
}

/// 429 with `Retry-After`.
fn too_many_attempts(refusal: &Refusal) -> Response {
    let seconds = refusal.retry_after_secs();
    let mut response = error_response(&MgmtError::new(
        "TOO_MANY_LOGIN_ATTEMPTS",
        429,
        format!(
            "too many failed logins for {}; no password was checked; try again in {seconds} s",
            refusal.what
        ),
    ));
    response.headers.push(("Retry-After", seconds.to_string()));
    response
}

/// Records a failed login (event and counters live in the user store) and says why in
/// words that do not reveal whether the user exists.
fn login_failed(mgmt: &Mgmt, name: &str, failure: &AuthFailure) -> MgmtError {
    mgmt.events.raise(
        "USER_LOGIN_FAILURE",
        format!("login failed for user {name:?}: {:?}", failure.reason),
        None,
        Some(name),
    );
    MgmtError::new(
        "UNAUTHORIZED",
        401,
        format!(
            "login failed for user {name:?}: wrong user name or password, or the user is disabled"
        ),
    )
}

fn unauthorized(error: &MgmtError) -> Response {
    let mut response = error_response(error);
    response
        .headers
        .push(("WWW-Authenticate", "Basic realm=\"troika\"".to_owned()));
    response
}

/// `Authorization: Basic base64(name:password)`; `None` when the header is absent.
fn basic_credentials(request: &Request) -> Option<Result<(String, String), MgmtError>> {
    let header = request.authorization.as_deref()?;
    let malformed = |why: &str| {
        MgmtError::new(
            "UNAUTHORIZED",
            401,
            format!(
                "the Authorization header is not usable: {why}; send Basic base64(user:password)"
            ),
        )
    };
    let Some((scheme, encoded)) = header.split_once(' ') else {
        return Some(Err(malformed("no scheme")));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Some(Err(malformed("only the Basic scheme is supported")));
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return Some(Err(malformed("the credentials are not base64")));
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return Some(Err(malformed("the credentials are not UTF-8")));
    };
    let Some((name, password)) = text.split_once(':') else {
        return Some(Err(malformed("the credentials have no ':'")));
    };
    Some(Ok((name.to_owned(), password.to_owned())))
}

/// The coarse role check of a route; a refusal raises `ACCESS_DENIED`.
pub fn check_role(
    mgmt: &Mgmt,
    caller: &Caller,
    route: &Route,
    request: &Request,
) -> Result<(), MgmtError> {
    if route.access == Access::Public {
        return Ok(());
    }
    match caller.role {
        Some(role) if route.access.admits(role) => Ok(()),
        role => Err(denied(
            mgmt,
            caller,
            &format!(
                "{} {} needs the role {}; user {:?} has {}",
                request.method,
                request.path(),
                route.access.roles().join(" or "),
                caller.name,
                role.map_or("none", Role::as_str)
            ),
            None,
        )),
    }
}

/// A POOL_ADMIN may act only on the pools it owns; ADMIN on all.
pub fn require_pool_owner(
    mgmt: &Mgmt,
    caller: &Caller,
    pool_id: u32,
    owners: &[u32],
    what: &str,
) -> Result<(), MgmtError> {
    if caller.is_admin() {
        return Ok(());
    }
    match caller.user_id {
        Some(id) if caller.role == Some(Role::PoolAdmin) && owners.contains(&id) => Ok(()),
        _ => Err(denied(
            mgmt,
            caller,
            &format!(
                "user {:?} may not {what}: pool {pool_id} is not one of its pools; an ADMIN can add it to the pool's owners",
                caller.name
            ),
            Some(u64::from(pool_id)),
        )),
    }
}

fn denied(mgmt: &Mgmt, caller: &Caller, message: &str, entity: Option<u64>) -> MgmtError {
    mgmt.events.raise(
        "ACCESS_DENIED",
        message.to_owned(),
        entity,
        Some(caller.name.as_str()),
    );
    MgmtError::new("PERMISSION_DENIED", 403, message.to_owned())
}
