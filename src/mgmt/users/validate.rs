//! Checks of the fields of user create and update requests, each refused with a 400 that
//! says what to send instead.

use super::Role;
use crate::mgmt::api::MgmtError;

pub(super) const NAME_MAX_CHARS: usize = 64;
const PASSWORD_MIN_CHARS: usize = 8;
const PASSWORD_MAX_CHARS: usize = 128;
const EMAIL_MAX_CHARS: usize = 254;

pub(super) fn validate_name(name: &str) -> Result<(), MgmtError> {
    let length = name.chars().count();
    if length == 0 || length > NAME_MAX_CHARS {
        return Err(MgmtError::bad_request(format!(
            "user name must be 1 to {NAME_MAX_CHARS} characters long, got {length}"
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@')))
    {
        return Err(MgmtError::bad_request(format!(
            "user name {name:?} contains {bad:?}; use only letters, digits, '_', '.', '-' \
             and '@'"
        )));
    }
    // "." and ".." read as path components in logs, URLs and shells.
    if name.chars().all(|c| c == '.') {
        return Err(MgmtError::bad_request(format!(
            "user name {name:?} is made only of dots; include a letter or digit"
        )));
    }
    Ok(())
}

pub(super) fn validate_password(password: &str) -> Result<(), MgmtError> {
    let length = password.chars().count();
    if length < PASSWORD_MIN_CHARS {
        return Err(MgmtError::new(
            "PASSWORD_TOO_SHORT",
            400,
            format!("the password has {length} characters; use at least {PASSWORD_MIN_CHARS}"),
        ));
    }
    if length > PASSWORD_MAX_CHARS {
        return Err(MgmtError::new(
            "PASSWORD_TOO_LONG",
            400,
            format!("the password has {length} characters; use at most {PASSWORD_MAX_CHARS}"),
        ));
    }
    Ok(())
}

pub(super) fn parse_role(text: &str) -> Result<Role, MgmtError> {
    Role::parse(text).ok_or_else(|| {
        let roles: Vec<&str> = Role::ALL.iter().map(|role| role.as_str()).collect();
        MgmtError::new(
            "INVALID_ROLE",
            400,
            format!("{text:?} is not a role; use one of {}", roles.join(", ")),
        )
    })
}

/// An email is optional (empty means none); when given it must look like `local@domain`.
pub(super) fn validate_email(email: &str) -> Result<String, MgmtError> {
    if email.is_empty() {
        return Ok(String::new());
    }
    let well_formed = email.chars().count() <= EMAIL_MAX_CHARS
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if !well_formed {
        return Err(MgmtError::bad_request(format!(
            "email {email:?} is not an address like name@example.com (at most \
             {EMAIL_MAX_CHARS} characters); correct it or leave it empty"
        )));
    }
    Ok(email.to_string())
}
