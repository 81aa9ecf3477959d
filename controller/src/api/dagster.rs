//! Dagster, first-class: a CodeLocation that is a Dagster code location (how its code
//! server starts, under which name it is listed) and an Environment that runs a Dagster
//! instance (its webserver, told to reload after each change, and its `workspace.yaml`,
//! written by Vigie).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::common::{DurationSpec, NAME_PATTERN};

/// The default port of a Dagster code server (Dagster's own Helm chart uses 3030; the
/// documentation's examples 4000).
pub const DEFAULT_CODE_SERVER_PORT: u16 = 4000;

/// A Dagster code location: Vigie starts its code server with the SHA's image, lists it
/// in the Environment's workspace and has the webserver reload it after every change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("[has(self.module), has(self.pythonFile), has(self.packageName)].filter(x, x).size() == 1")
    .message("set exactly one of module (-m), pythonFile (-f) or packageName (--package-name): where the code server finds the definitions"))]
pub struct DagsterCodeLocation {
    /// The location's name in the workspace and in the webserver (`location_name`).
    /// Defaults to the CodeLocation's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"), length(max = 128))]
    pub location_name: Option<String>,
    /// The port the code server listens on in the container (default 4000). Docker: the
    /// other containers of the environment's network reach it at `<alias>:<port>`.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// How the code server starts: `CodeServer` runs `dagster code-server start` (the
    /// definitions load in a child process: a load error is served to the webserver, as
    /// Dagster recommends), `Grpc` runs `dagster api grpc` (a load error stops it).
    #[serde(default)]
    pub server: DagsterServer,
    /// The Python module holding the definitions (`-m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_.]*$"))]
    pub module: Option<String>,
    /// The Python file holding the definitions (`-f`), relative to the working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub python_file: Option<String>,
    /// The installed package holding the definitions (`--package-name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_.]*$"))]
    pub package_name: Option<String>,
    /// The attribute of the module that holds the definitions (`-a`), when it is not
    /// found by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub attribute: Option<String>,
    /// The working directory the code is loaded from (`-d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^/"))]
    pub working_directory: Option<String>,
}

fn default_port() -> u16 {
    DEFAULT_CODE_SERVER_PORT
}

/// The command that serves a code location.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum DagsterServer {
    /// `dagster code-server start`.
    #[default]
    CodeServer,
    /// `dagster api grpc`.
    Grpc,
}

impl DagsterCodeLocation {
    /// The name the location is listed under.
    #[must_use]
    pub fn name<'a>(&'a self, code_location: &'a str) -> &'a str {
        self.location_name.as_deref().unwrap_or(code_location)
    }

    /// The code server's command line (the image's `dagster` on the `PATH`).
    #[must_use]
    pub fn command(&self, code_location: &str) -> Vec<String> {
        let mut cmd: Vec<String> = match self.server {
            DagsterServer::CodeServer => vec!["dagster", "code-server", "start"],
            DagsterServer::Grpc => vec!["dagster", "api", "grpc"],
        }
        .into_iter()
        .map(str::to_owned)
        .collect();
        cmd.extend(["--host".into(), "0.0.0.0".into()]);
        cmd.extend(["--port".into(), self.port.to_string()]);
        cmd.extend(self.definitions_flags());
        cmd.extend([
            "--location-name".to_owned(),
            self.name(code_location).to_owned(),
        ]);
        cmd
    }

    /// `dagster definitions validate` for the same definitions, run in the SHA's image
    /// before the switch.
    #[must_use]
    pub fn validate_command(&self) -> Vec<String> {
        let mut cmd: Vec<String> = ["dagster", "definitions", "validate"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        cmd.extend(self.definitions_flags());
        cmd
    }

    /// Where the definitions are: `--module-name`, `--python-file`, `--package-name`,
    /// `--attribute`, `--working-directory`, as Dagster's commands take them.
    fn definitions_flags(&self) -> Vec<String> {
        [
            ("--module-name", &self.module),
            ("--python-file", &self.python_file),
            ("--package-name", &self.package_name),
            ("--attribute", &self.attribute),
            ("--working-directory", &self.working_directory),
        ]
        .into_iter()
        .filter_map(|(flag, value)| value.as_ref().map(|v| [flag.to_owned(), v.clone()]))
        .flatten()
        .collect()
    }
}

/// The Dagster instance of an Environment: its webserver, asked to reload a location
/// after each deploy or rollback (a location whose definitions fail to load is
/// unhealthy), and its workspace, where Vigie lists each code location running here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DagsterInstance {
    /// The webserver's GraphQL endpoint, as Vigie reaches it
    /// (`http://127.0.0.1:3000/graphql`).
    #[schemars(regex(pattern = r"^https?://\S+$"), length(max = 2048))]
    pub graphql_url: String,
    /// Where the workspace (`workspace.yaml`) lives: Vigie keeps one `grpc_server` entry
    /// per code location running here, and leaves every other entry as it is.
    pub workspace: DagsterWorkspace,
    /// Docker: the network the code servers join, each under its location's name as
    /// alias, so that a new SHA needs no workspace change. The webserver and the daemon
    /// must be on it too. Created when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"), length(max = 128))]
    pub network: Option<String>,
    /// Run `dagster definitions validate` in the new SHA's image before the switch (a
    /// pre-deploy check): definitions that do not load stop the deploy and keep what
    /// runs.
    #[serde(default)]
    pub validate_definitions: bool,
    /// How long one request to the webserver may take, a reload included (1s to 5m).
    #[serde(default = "default_reload_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('5m')").message("must be between 1s and 5m"))]
    pub timeout: DurationSpec,
}

fn default_reload_timeout() -> DurationSpec {
    DurationSpec::from_secs(60)
}

/// Where a workspace file lives. Exactly one of `file` (Docker: a file on the Vigie
/// host, mounted into the webserver and the daemon) or `configMap` (Kubernetes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.file) != has(self.configMap)").message("set exactly one of file (Docker) or configMap (Kubernetes)"))]
pub struct DagsterWorkspace {
    /// Absolute path of `workspace.yaml` on the host Vigie runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^/"))]
    pub file: Option<String>,
    /// A key of a ConfigMap in the environment's namespace, mounted into the webserver
    /// and the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapKey>,
}

/// A key of a ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapKey {
    /// Name of the ConfigMap (created when missing).
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 253))]
    pub name: String,
    /// The key holding the workspace.
    #[serde(default = "default_workspace_key")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(max = 253))]
    pub key: String,
}

fn default_workspace_key() -> String {
    "workspace.yaml".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(yaml: &str) -> DagsterCodeLocation {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn the_code_server_command_names_the_definitions_and_the_location() {
        let l = location("module: sales.definitions\nworkingDirectory: /opt/dagster/app\n");
        assert_eq!(
            l.command("sales").join(" "),
            "dagster code-server start --host 0.0.0.0 --port 4000 --module-name sales.definitions --working-directory /opt/dagster/app --location-name sales"
        );
        let l = location(
            "server: Grpc\npythonFile: defs.py\nlocationName: ventes\nport: 4010\nattribute: defs\n",
        );
        assert_eq!(
            l.command("sales").join(" "),
            "dagster api grpc --host 0.0.0.0 --port 4010 --python-file defs.py --attribute defs --location-name ventes"
        );
        assert_eq!(l.name("sales"), "ventes");
        assert_eq!(
            l.validate_command().join(" "),
            "dagster definitions validate --python-file defs.py --attribute defs"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_norway::from_str::<DagsterCodeLocation>("module: a\nmodul: b\n").unwrap_err();
        assert!(e.to_string().contains("modul"), "{e}");
    }
}
