//! `controller`: list and show the controllers, fail one and recover it, by number.

use super::session::Session;
use super::{CliError, ControllerCommand, tables};
use crate::mgmt::api::ControllerInfo;

impl Session {
    pub(super) fn controller(&self, command: ControllerCommand) -> Result<String, CliError> {
        match command {
            ControllerCommand::Ls => {
                let controllers = self.list_all("/api/rest/controllers?sort=id")?;
                self.render(controllers, |controllers: Vec<ControllerInfo>| {
                    tables::controllers(&controllers)
                })
            }
            ControllerCommand::Show { number } => {
                let path = format!("/api/rest/controllers/{number}");
                let controller = self.call("GET", &path, None)?;
                self.render(controller, |controller: ControllerInfo| {
                    tables::controller(&controller)
                })
            }
            ControllerCommand::Fail { number } => {
                let path = format!("/api/rest/controllers/{number}/fail?approved=true");
                let controller = self.call("POST", &path, None)?;
                self.render(controller, |controller: ControllerInfo| {
                    tables::controllers(&[controller])
                })
            }
            ControllerCommand::Recover { number } => {
                let path = format!("/api/rest/controllers/{number}/recover");
                let controller = self.call("POST", &path, None)?;
                self.render(controller, |controller: ControllerInfo| {
                    tables::controllers(&[controller])
                })
            }
        }
    }
}
