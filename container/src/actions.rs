//! The Windows commands the entrypoint runs, as data.
//!
//! Building each invocation is separate from running it, so the exact argv is tested on Linux,
//! printed by `--plan`, and shown to carry no secret. The password travels to the one PowerShell
//! that needs it in that child's environment, which no other process can read; PowerShell
//! deletes the variable before it does anything else with it.

use crate::config::{Config, Mapping, VirtualDirectory, vars};
use base64::Engine as _;
use serde::Serialize;

/// A value in a child's environment. `Password` is filled in only when the child is spawned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum EnvValue {
    Plain(String),
    Password,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invocation {
    pub program: String,
    pub args: Vec<String>,
    /// Added to the (credential-free) environment the child inherits.
    pub env: Vec<(String, EnvValue)>,
    /// The PowerShell script that `-EncodedCommand` carries, readable, for `--plan`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

/// PowerShell's answer on its last line of output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingOutcome {
    /// The drive already maps this share and the connection is OK.
    Kept,
    Created,
    /// A mapping of the drive to another share, or a broken one, was removed and made again.
    Replaced,
}

impl MappingOutcome {
    pub fn parse(stdout: &str) -> Option<Self> {
        match stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())?
        {
            "kept" => Some(Self::Kept),
            "created" => Some(Self::Created),
            "replaced" => Some(Self::Replaced),
            _ => None,
        }
    }
}

/// A single-quoted PowerShell string literal. Inside one, only a single quote is special, and
/// it is escaped by doubling it. PowerShell also takes the typographic single quotes
/// (U+2018–U+201B) as single quotes, so they are doubled too.
pub fn ps_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The script that makes `mapping` exist, idempotently, and prints kept / created / replaced.
pub fn mapping_script(mapping: &Mapping) -> String {
    let remote = ps_quote(&mapping.remote);
    let local = ps_quote(&mapping.local());
    let user = vars::CHILD_USERNAME;
    let pass = vars::CHILD_PASSWORD;
    format!(
        "$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$password = $env:{pass}
Remove-Item -Path Env:\\{pass}
$remote = {remote}
$local = {local}
$existing = Get-SmbGlobalMapping -LocalPath $local -ErrorAction SilentlyContinue
if ($existing -and $existing.RemotePath -eq $remote -and $existing.Status -eq 'OK') {{
  Write-Output 'kept'
  exit 0
}}
$outcome = 'created'
if ($existing) {{
  Remove-SmbGlobalMapping -LocalPath $local -Force
  $outcome = 'replaced'
}}
$secure = ConvertTo-SecureString -String $password -AsPlainText -Force
$password = $null
$credential = New-Object System.Management.Automation.PSCredential -ArgumentList $env:{user}, $secure
New-SmbGlobalMapping -RemotePath $remote -LocalPath $local -Credential $credential -RequirePrivacy $true -Persistent $true | Out-Null
Write-Output $outcome
"
    )
}

/// `-EncodedCommand` takes base64 of UTF-16LE: no quoting rules of cmd, CreateProcess or
/// powershell.exe can mangle the script.
pub fn encode_command(script: &str) -> String {
    let bytes: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn map_share(config: &Config, mapping: &Mapping, username: &str) -> Invocation {
    let script = mapping_script(mapping);
    Invocation {
        program: config.tools.powershell.clone(),
        args: vec![
            "-NoLogo".into(),
            "-NoProfile".into(),
            "-NonInteractive".into(),
            "-ExecutionPolicy".into(),
            "Bypass".into(),
            "-EncodedCommand".into(),
            encode_command(&script),
        ],
        env: vec![
            (
                vars::CHILD_USERNAME.into(),
                EnvValue::Plain(username.into()),
            ),
            (vars::CHILD_PASSWORD.into(), EnvValue::Password),
        ],
        script: Some(script),
    }
}

/// appcmd's identifier of a virtual directory of the site's root application.
pub fn vdir_id(site: &str, vdir: &VirtualDirectory) -> String {
    format!("{site}{}", vdir.path)
}

pub fn vdir_query(config: &Config, vdir: &VirtualDirectory) -> Invocation {
    appcmd(
        config,
        vec![
            "list".into(),
            "vdir".into(),
            vdir_id(&config.site, vdir),
            "/text:physicalPath".into(),
        ],
    )
}

pub fn vdir_add(config: &Config, vdir: &VirtualDirectory) -> Invocation {
    appcmd(
        config,
        vec![
            "add".into(),
            "vdir".into(),
            format!("/app.name:{}/", config.site),
            format!("/path:{}", vdir.path),
            format!("/physicalPath:{}", vdir.physical_path),
        ],
    )
}

pub fn vdir_set(config: &Config, vdir: &VirtualDirectory) -> Invocation {
    appcmd(
        config,
        vec![
            "set".into(),
            "vdir".into(),
            vdir_id(&config.site, vdir),
            format!("/physicalPath:{}", vdir.physical_path),
        ],
    )
}

/// What IIS must never serve: the folder at the share root where fargate-smb keeps its
/// bookkeeping (content manifests and ACL records; `crates/content-copy`'s `BOOKKEEPING_FOLDER`),
/// even when a virtual directory is the share root; and the name of the content manifest that
/// earlier versions kept in the content folder itself, which stays there until the next Update
/// of `Custom::WebContent` moves it (an upgrade that changes only code sends none).
pub const HIDDEN_SEGMENTS: [&str; 2] = [".fargate-smb", ".fargate-smb-content.json"];

/// The configuration section that holds the site's hidden segments.
const REQUEST_FILTERING: &str = "/section:system.webServer/security/requestFiltering";

/// `appcmd list config` of the site's request filtering: prints the effective section as XML,
/// hidden segments included.
pub fn hidden_segment_query(config: &Config) -> Invocation {
    appcmd(
        config,
        vec![
            "list".into(),
            "config".into(),
            config.site.clone(),
            REQUEST_FILTERING.into(),
        ],
    )
}

/// Hide `segments` in every URL of the site, each virtual directory included: IIS answers 404
/// for a path with such a segment anywhere in it (a folder or a file name). One appcmd call adds
/// them all. Written to applicationHost.config (`/commit:apphost`), not to a web.config that
/// appcmd would otherwise put in the served folder, on the share.
pub fn hidden_segment_add(config: &Config, segments: &[&str]) -> Invocation {
    let mut args = vec![
        "set".into(),
        "config".into(),
        config.site.clone(),
        REQUEST_FILTERING.into(),
    ];
    args.extend(
        segments
            .iter()
            .map(|s| format!("/+hiddenSegments.[segment='{s}']")),
    );
    args.push("/commit:apphost".into());
    appcmd(config, args)
}

/// The segments of [`HIDDEN_SEGMENTS`] the `list config` answer does not hide yet: its XML has
/// `<add segment=".fargate-smb" />` for one that is (IIS compares segments without regard to
/// case). Adding one twice would fail (a duplicate collection entry), so a start adds only what
/// is missing; an answer that failed counts as none hidden.
pub fn hidden_segments_missing(exit_code: Option<i32>, stdout: &str) -> Vec<&'static str> {
    let listed = stdout.to_ascii_lowercase();
    HIDDEN_SEGMENTS
        .into_iter()
        .filter(|s| exit_code != Some(0) || !listed.contains(&format!("segment=\"{s}\"")))
        .collect()
}

fn appcmd(config: &Config, args: Vec<String>) -> Invocation {
    Invocation {
        program: config.tools.appcmd.clone(),
        args,
        env: Vec::new(),
        script: None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VdirDecision {
    Keep,
    Add,
    Set,
}

/// What to do after `appcmd list vdir <id> /text:physicalPath`: appcmd exits 1 and prints
/// nothing on stdout when the directory does not exist, and prints its physical path when it
/// does. IIS compares paths without regard to case or a trailing backslash.
pub fn vdir_decide(exit_code: Option<i32>, stdout: &str, want: &str) -> VdirDecision {
    let have = stdout.lines().map(str::trim).find(|l| !l.is_empty());
    match (exit_code, have) {
        (Some(0), Some(have)) if same_path(have, want) => VdirDecision::Keep,
        (Some(0), Some(_)) => VdirDecision::Set,
        _ => VdirDecision::Add,
    }
}

fn same_path(a: &str, b: &str) -> bool {
    let norm = |p: &str| p.trim_end_matches('\\').to_ascii_lowercase();
    norm(a) == norm(b)
}

/// Every command a start would run, in order, for `--plan`. The appcmd `add`/`set` choice is
/// made at run time from the `list` answer; the plan shows both.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub mappings: Vec<PlannedMapping>,
    /// With any virtual directory: hide the bookkeeping folder first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_segment: Option<PlannedHiddenSegment>,
    pub virtual_directories: Vec<PlannedVdir>,
    pub main_process: Vec<String>,
    pub removed_from_child_environment: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PlannedMapping {
    pub local: String,
    pub remote: String,
    pub invocation: Invocation,
}

#[derive(Debug, Serialize)]
pub struct PlannedHiddenSegment {
    pub segments: [&'static str; 2],
    pub query: Invocation,
    pub add_if_missing: Invocation,
}

#[derive(Debug, Serialize)]
pub struct PlannedVdir {
    pub id: String,
    pub physical_path: String,
    pub query: Invocation,
    pub add_if_missing: Invocation,
    pub set_if_different: Invocation,
}

pub fn plan(config: &Config, username: &str, main: &[String]) -> Plan {
    Plan {
        mappings: config
            .mappings
            .iter()
            .map(|m| PlannedMapping {
                local: m.local(),
                remote: m.remote.clone(),
                invocation: map_share(config, m, username),
            })
            .collect(),
        hidden_segment: (!config.vdirs.is_empty()).then(|| PlannedHiddenSegment {
            segments: HIDDEN_SEGMENTS,
            query: hidden_segment_query(config),
            add_if_missing: hidden_segment_add(config, &HIDDEN_SEGMENTS),
        }),
        virtual_directories: config
            .vdirs
            .iter()
            .map(|v| PlannedVdir {
                id: vdir_id(&config.site, v),
                physical_path: v.physical_path.clone(),
                query: vdir_query(config, v),
                add_if_missing: vdir_add(config, v),
                set_if_different: vdir_set(config, v),
            })
            .collect(),
        main_process: main.to_vec(),
        removed_from_child_environment: config.credential_vars.clone(),
    }
}

/// A command line as Windows would show it, for people (not for execution).
pub fn display(inv: &Invocation) -> String {
    std::iter::once(inv.program.as_str())
        .chain(inv.args.iter().map(String::as_str))
        .map(|a| {
            if a.is_empty() || a.contains([' ', '\t']) {
                format!("\"{a}\"")
            } else {
                a.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::HashMap;

    const PASSWORD: &str = "S3cret-'quoted'-\"and\"-$env:x";

    fn config() -> Config {
        let env: HashMap<&str, &str> = [
            (
                "SMB_MAPPINGS",
                r"G:=\\fs.example.com\share\o'brien;H:=\\fs2\data",
            ),
            ("SMB_USERNAME", r"EXAMPLE\svc-web"),
            ("SMB_PASSWORD", PASSWORD),
            ("SMB_IIS_VDIRS", r"/content=G:\web;/data=H:\"),
        ]
        .into_iter()
        .collect();
        Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap()
    }

    fn decode(b64: &str) -> String {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let units: Vec<u16> = bytes
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).unwrap()
    }

    #[test]
    fn mapping_invocation_is_exact() {
        let c = config();
        let inv = map_share(&c, &c.mappings[0], r"EXAMPLE\svc-web");
        assert_eq!(inv.program, "powershell.exe");
        assert_eq!(
            inv.args[..6],
            [
                "-NoLogo",
                "-NoProfile",
                "-NonInteractive",
                "-ExecutionPolicy",
                "Bypass",
                "-EncodedCommand"
            ]
        );
        let script = decode(&inv.args[6]);
        assert_eq!(Some(&script), inv.script.as_ref());
        assert!(script.contains(r"$remote = '\\fs.example.com\share\o''brien'"));
        assert!(script.contains("$local = 'G:'"));
        assert!(script.contains(
            "New-SmbGlobalMapping -RemotePath $remote -LocalPath $local -Credential $credential -RequirePrivacy $true -Persistent $true"
        ));
        // The variable is gone before PowerShell runs anything that could fail and print it.
        let remove = script
            .find("Remove-Item -Path Env:\\FARGATE_SMB_PASSWORD")
            .unwrap();
        let first_cmdlet = script.find("Get-SmbGlobalMapping").unwrap();
        assert!(remove < first_cmdlet);
        assert_eq!(
            inv.env,
            vec![
                (
                    "FARGATE_SMB_USERNAME".to_string(),
                    EnvValue::Plain(r"EXAMPLE\svc-web".into())
                ),
                ("FARGATE_SMB_PASSWORD".to_string(), EnvValue::Password),
            ]
        );
    }

    #[test]
    fn the_secret_is_in_no_argv_and_no_plan() {
        let c = config();
        let p = plan(
            &c,
            r"EXAMPLE\svc-web",
            &["C:\\ServiceMonitor.exe".into(), "w3svc".into()],
        );
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("S3cret"), "{json}");
        let mut all = Vec::new();
        for m in &p.mappings {
            all.push(&m.invocation);
        }
        for v in &p.virtual_directories {
            all.extend([&v.query, &v.add_if_missing, &v.set_if_different]);
        }
        let hidden = p.hidden_segment.as_ref().unwrap();
        all.extend([&hidden.query, &hidden.add_if_missing]);
        assert_eq!(all.len(), 2 + 2 * 3 + 2);
        for inv in all {
            for a in inv.args.iter().chain(inv.script.iter()) {
                assert!(!a.contains("S3cret"));
            }
            if let Some(i) = inv.args.iter().position(|a| a == "-EncodedCommand") {
                assert!(!decode(&inv.args[i + 1]).contains("S3cret"));
            }
        }
    }

    #[test]
    fn appcmd_invocations_are_exact() {
        let c = config();
        let v = &c.vdirs[0];
        assert_eq!(
            vdir_query(&c, v).args,
            [
                "list",
                "vdir",
                "Default Web Site/content",
                "/text:physicalPath"
            ]
        );
        assert_eq!(
            vdir_add(&c, v).args,
            [
                "add",
                "vdir",
                "/app.name:Default Web Site/",
                "/path:/content",
                r"/physicalPath:G:\web"
            ]
        );
        assert_eq!(
            vdir_set(&c, &c.vdirs[1]).args,
            ["set", "vdir", "Default Web Site/data", r"/physicalPath:H:\"]
        );
        assert_eq!(
            vdir_add(&c, v).program,
            r"C:\Windows\System32\inetsrv\appcmd.exe"
        );
        assert_eq!(
            display(&vdir_add(&c, v)),
            r#"C:\Windows\System32\inetsrv\appcmd.exe add vdir "/app.name:Default Web Site/" /path:/content /physicalPath:G:\web"#
        );
    }

    #[test]
    fn the_bookkeeping_folder_is_hidden_by_request_filtering() {
        let c = config();
        assert_eq!(
            hidden_segment_query(&c).args,
            [
                "list",
                "config",
                "Default Web Site",
                "/section:system.webServer/security/requestFiltering"
            ]
        );
        let add = hidden_segment_add(&c, &HIDDEN_SEGMENTS);
        assert_eq!(
            add.args,
            [
                "set",
                "config",
                "Default Web Site",
                "/section:system.webServer/security/requestFiltering",
                "/+hiddenSegments.[segment='.fargate-smb']",
                "/+hiddenSegments.[segment='.fargate-smb-content.json']",
                "/commit:apphost"
            ]
        );
        assert_eq!(
            display(&hidden_segment_add(&c, &[".fargate-smb"])),
            r#"C:\Windows\System32\inetsrv\appcmd.exe set config "Default Web Site" /section:system.webServer/security/requestFiltering /+hiddenSegments.[segment='.fargate-smb'] /commit:apphost"#
        );
        // appcmd's XML, as it prints the section.
        let listed = "<system.webServer>\r\n  <security>\r\n    <requestFiltering>\r\n      <hiddenSegments>\r\n        <add segment=\"web.config\" />\r\n        <add segment=\".FARGATE-SMB\" />\r\n      </hiddenSegments>\r\n";
        assert_eq!(
            hidden_segments_missing(Some(0), listed),
            [".fargate-smb-content.json"]
        );
        let both = listed.replace(
            "</hiddenSegments>",
            "  <add segment=\".fargate-smb-content.json\" />\r\n      </hiddenSegments>",
        );
        assert!(hidden_segments_missing(Some(0), &both).is_empty());
        assert_eq!(
            hidden_segments_missing(Some(0), &listed.replace(".FARGATE-SMB", "bin")),
            HIDDEN_SEGMENTS
        );
        assert_eq!(hidden_segments_missing(Some(1), &both), HIDDEN_SEGMENTS);
        // Planned only when IIS is configured at all.
        assert!(plan(&c, "x", &[]).hidden_segment.is_some());
        let mut bare = c.clone();
        bare.vdirs.clear();
        assert!(plan(&bare, "x", &[]).hidden_segment.is_none());
    }

    #[test]
    fn vdir_decisions() {
        assert_eq!(vdir_decide(Some(1), "", r"G:\web"), VdirDecision::Add);
        assert_eq!(vdir_decide(None, "", r"G:\web"), VdirDecision::Add);
        assert_eq!(
            vdir_decide(Some(0), "g:\\WEB\\\r\n", r"G:\web"),
            VdirDecision::Keep
        );
        assert_eq!(
            vdir_decide(Some(0), "C:\\inetpub\\x\r\n", r"G:\web"),
            VdirDecision::Set
        );
    }

    #[test]
    fn mapping_outcomes() {
        assert_eq!(
            MappingOutcome::parse("created\r\n"),
            Some(MappingOutcome::Created)
        );
        assert_eq!(
            MappingOutcome::parse("noise\nreplaced\n\n"),
            Some(MappingOutcome::Replaced)
        );
        assert_eq!(MappingOutcome::parse("kept"), Some(MappingOutcome::Kept));
        assert_eq!(MappingOutcome::parse(""), None);
        assert_eq!(MappingOutcome::parse("error"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(ps_quote("a'b"), "'a''b'");
        assert_eq!(ps_quote("o\u{2019}brien"), "'o\u{2019}\u{2019}brien'");
        assert_eq!(ps_quote(r"\\fs\share"), r"'\\fs\share'");
        assert_eq!(decode(&encode_command("é'x")), "é'x");
    }
}
