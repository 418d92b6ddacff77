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

/// The first line the script writes on stderr when it fails, then the message on the next line:
/// `fargate-smb-error: step=<step> win32=<code|-> hresult=<0x…|-> category=<category|->`.
pub const ERROR_MARKER: &str = "fargate-smb-error:";

/// The script that makes `mapping` exist, idempotently, and prints kept / created / replaced.
///
/// With stderr redirected and the command encoded, Windows PowerShell 5.1 serialises every error
/// record on stderr as CLIXML whatever `-OutputFormat` says (only pwsh 6.2 and later honour it),
/// so the whole script runs in one `try`: its `catch` writes the failure as plain UTF-8 text
/// straight to the stderr stream, past the host's serialiser, and exits 1. The Win32 error comes
/// from the CimException's `ErrorData` (an MSFT_WmiError: `error_Type` `WIN32`, `error_Code`),
/// else from the `Windows System Error <n>,…` id the CIM cmdlet adapter gives the record. The
/// diagnosis itself is guarded by its own `try`: whatever it hits, the message still goes out.
///
/// `-Persistent $false`: persistence only recreates the mapping after a reboot, which a container
/// discarded at stop never has, and it saves the credential in the container's Credential
/// Manager; since Windows Server 2019 a global mapping is persistent unless told otherwise, so
/// the flag is spelled out rather than left to the default.
pub fn mapping_script(mapping: &Mapping) -> String {
    let remote = ps_quote(&mapping.remote);
    let local = ps_quote(&mapping.local());
    let user = vars::CHILD_USERNAME;
    let pass = vars::CHILD_PASSWORD;
    format!(
        "$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$step = 'start'
try {{
  $password = $env:{pass}
  Remove-Item -Path Env:\\{pass}
  $remote = {remote}
  $local = {local}
  $step = 'query'
  $existing = Get-SmbGlobalMapping -LocalPath $local -ErrorAction SilentlyContinue
  if ($existing -and $existing.RemotePath -eq $remote -and $existing.Status -eq 'OK') {{
    Write-Output 'kept'
    exit 0
  }}
  $outcome = 'created'
  if ($existing) {{
    $step = 'remove'
    Remove-SmbGlobalMapping -LocalPath $local -Force
    $outcome = 'replaced'
  }}
  $step = 'credential'
  $secure = ConvertTo-SecureString -String $password -AsPlainText -Force
  $password = $null
  $credential = New-Object System.Management.Automation.PSCredential -ArgumentList $env:{user}, $secure
  $step = 'map'
  New-SmbGlobalMapping -RemotePath $remote -LocalPath $local -Credential $credential -RequirePrivacy $true -Persistent $false | Out-Null
  Write-Output $outcome
}} catch {{
  $password = $null
  $failure = $_
  $win32 = '-'
  $hresult = '-'
  $category = '-'
  try {{
    $data = $null
    if ($failure.Exception.PSObject.Properties['ErrorData']) {{
      $data = $failure.Exception.ErrorData
    }}
    if ($data -and \"$($data.error_Type)\" -eq 'WIN32' -and $null -ne $data.error_Code) {{
      $win32 = [string]$data.error_Code
    }} elseif ($data -and \"$($data.error_Type)\" -eq 'HRESULT' -and $null -ne $data.error_Code) {{
      $hresult = '0x{{0:X8}}' -f [uint32]$data.error_Code
    }}
    if ($win32 -eq '-' -and \"$($failure.FullyQualifiedErrorId)\" -match '^Windows System Error (\\d+),') {{
      $win32 = $Matches[1]
    }}
    if ($hresult -eq '-') {{
      $hresult = '0x{{0:X8}}' -f $failure.Exception.HResult
    }}
    $category = [string]$failure.CategoryInfo.Category
  }} catch {{
  }}
  $message = (\"$($failure.Exception.Message)\" -replace '\\s+', ' ').Trim()
  $stderr = [System.IO.StreamWriter]::new([Console]::OpenStandardError(), [System.Text.UTF8Encoding]::new($false))
  # A newline first: the host may have written CLIXML records (progress) without one.
  $stderr.WriteLine()
  $stderr.WriteLine(\"{marker} step=$step win32=$win32 hresult=$hresult category=$category\")
  $stderr.WriteLine($message)
  $stderr.Flush()
  exit 1
}}
",
        marker = ERROR_MARKER,
    )
}

/// What a failed PowerShell said about its failure, from the script's own report or, for an
/// error it could not catch, from the CLIXML the host wrote instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptError {
    /// Which part of the script failed (`query`, `remove`, `credential`, `map`, …).
    pub step: Option<String>,
    pub win32: Option<u32>,
    pub hresult: Option<u32>,
    /// PowerShell's error category (`AuthenticationError`, `PermissionDenied`, …).
    pub category: Option<String>,
    /// Windows' message, on one line.
    pub message: String,
}

impl ScriptError {
    /// The report the script's `catch` writes (see [`ERROR_MARKER`]), wherever it is in stderr;
    /// `None` when there is none.
    pub fn parse(stderr: &str) -> Option<Self> {
        // The marker is looked for anywhere, not only at a line's start: the host writes its CLIXML
        // records without newlines, so a report after one could share its line.
        let at = stderr.find(ERROR_MARKER)?;
        let mut lines = stderr[at..].lines();
        let header = lines.next()?.strip_prefix(ERROR_MARKER)?;
        let mut error = Self::default();
        for (key, value) in header
            .split_whitespace()
            .filter_map(|field| field.split_once('='))
            .filter(|(_, value)| *value != "-" && !value.is_empty())
        {
            match key {
                "step" => error.step = Some(value.to_owned()),
                "win32" => error.win32 = value.parse().ok(),
                "hresult" => error.hresult = parse_hex(value),
                "category" => error.category = Some(value.to_owned()),
                _ => {}
            }
        }
        // The message is the next line; should the host write anything after the script's own
        // lines (it has no reason to), it is not part of the message.
        let message: Vec<&str> = lines
            .map(str::trim)
            .take_while(|l| !l.starts_with(CLIXML_MARKER) && !l.starts_with('<'))
            .filter(|l| !l.is_empty())
            .collect();
        error.message = message.join(" ");
        Some(error)
    }

    /// What the error records of a CLIXML stream say: an error raised where the script's `catch`
    /// could not see it (before its `try`, or in PowerShell itself). The message is the record's
    /// first line (before `At line:…`); the Win32 code and category come from the
    /// `FullyQualifiedErrorId` and `CategoryInfo` lines PowerShell formats under it.
    pub fn from_clixml(stderr: &str) -> Option<Self> {
        let text = clixml_errors(stderr)?;
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let message: Vec<&str> = lines
            .iter()
            .copied()
            .take_while(|l| !is_position_line(l) && !l.starts_with('+'))
            .collect();
        let message = if message.is_empty() {
            lines.first().copied().unwrap_or_default().to_owned()
        } else {
            message.join(" ")
        };
        // The formatter wraps long lines at the console width, even inside a word, so the id is
        // looked for in the lines joined without a separator.
        let joined: String = lines.concat();
        let win32 = joined
            .split("Windows System Error ")
            .nth(1)
            .and_then(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            });
        let category = lines
            .iter()
            .find_map(|l| l.strip_prefix("+ CategoryInfo"))
            .and_then(|rest| rest.trim_start().strip_prefix(':'))
            .and_then(|rest| rest.split(':').next())
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty());
        Some(Self {
            step: None,
            win32,
            hresult: None,
            category,
            message,
        })
    }
}

/// `At line:1 char:190` or `At C:\x.ps1:3 char:1`: where PowerShell says the error was.
fn is_position_line(line: &str) -> bool {
    line.starts_with("At ") && line.contains("char:")
}

fn parse_hex(value: &str) -> Option<u32> {
    let digits = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))?;
    u32::from_str_radix(digits, 16).ok()
}

/// The line Windows PowerShell writes before a CLIXML stream.
pub const CLIXML_MARKER: &str = "#< CLIXML";

/// The text of every error record (`<S S="Error">…</S>`) of the CLIXML on stderr, decoded and
/// concatenated (each record ends with its own `_x000D__x000A_`); progress and other records are
/// left out. `None` when stderr holds no CLIXML or no error record.
pub fn clixml_errors(stderr: &str) -> Option<String> {
    let start = stderr.find(CLIXML_MARKER)?;
    let mut rest = &stderr[start + CLIXML_MARKER.len()..];
    let mut text = String::new();
    let mut found = false;
    const OPEN: &str = "<S S=\"Error\">";
    while let Some(at) = rest.find(OPEN) {
        let body = &rest[at + OPEN.len()..];
        let Some(end) = body.find("</S>") else { break };
        text.push_str(&decode_clixml_string(&body[..end]));
        found = true;
        rest = &body[end..];
    }
    found.then_some(text)
}

/// A CLIXML string's text: XML's character references first (the element's content as XML
/// defines it), then PowerShell's own `_xHHHH_` escapes of UTF-16 code units (control
/// characters, and `_x005F_` for an underscore that would otherwise start one).
pub fn decode_clixml_string(xml: &str) -> String {
    let mut units: Vec<u16> = Vec::with_capacity(xml.len());
    let unescaped = decode_xml_references(xml);
    let chars: Vec<char> = unescaped.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '_'
            && chars.get(i + 1) == Some(&'x')
            && chars.get(i + 6) == Some(&'_')
            && chars[i + 2..i + 6].iter().all(char::is_ascii_hexdigit)
        {
            let hex: String = chars[i + 2..i + 6].iter().collect();
            if let Ok(unit) = u16::from_str_radix(&hex, 16) {
                units.push(unit);
                i += 7;
                continue;
            }
        }
        let mut buf = [0u16; 2];
        units.extend_from_slice(chars[i].encode_utf16(&mut buf));
        i += 1;
    }
    String::from_utf16_lossy(&units)
}

fn decode_xml_references(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let decoded = after.find(';').and_then(|end| {
            let name = &after[..end];
            let c = match name {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
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

/// Turn IIS's output cache and HTTP.sys's kernel cache off for one URL path of the site, so
/// each request reads the file from the share: a cached health probe would keep answering 200
/// after the mapping is gone (IIS caches a file that is asked for often, and a probe asked for
/// every few seconds by each load balancer node is). Written to applicationHost.config as a
/// `<location>` of that path (`/commit:apphost`), not to a web.config in the served folder.
/// Setting attributes is idempotent, so a restart runs it again unchanged.
pub fn no_cache_set(config: &Config, url_path: &str) -> Invocation {
    appcmd(
        config,
        vec![
            "set".into(),
            "config".into(),
            format!("{}{url_path}", config.site),
            "/section:system.webServer/caching".into(),
            "/enabled:false".into(),
            "/enableKernelCache:false".into(),
            "/commit:apphost".into(),
        ],
    )
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
    /// After the directories: the URL paths IIS must never serve from a cache.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uncached: Vec<Invocation>,
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
        uncached: config
            .no_cache
            .iter()
            .map(|path| no_cache_set(config, path))
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
        // Not persistent: nothing in a container outlives its stop, and persistence would save
        // the credential in the container's Credential Manager. Spelled out, because on Windows
        // Server 2019 a global mapping is persistent by default.
        assert!(script.contains(
            "\n  New-SmbGlobalMapping -RemotePath $remote -LocalPath $local -Credential $credential -RequirePrivacy $true -Persistent $false | Out-Null\n"
        ));
        assert!(!script.contains("-Persistent $true"));
        // Every command runs inside the one try whose catch reports in plain text.
        let try_at = script.find("\ntry {\n").unwrap();
        let catch_at = script.find("\n} catch {\n").unwrap();
        for command in [
            "$password = $env:FARGATE_SMB_PASSWORD",
            "Get-SmbGlobalMapping",
            "Remove-SmbGlobalMapping",
            "ConvertTo-SecureString",
            "New-SmbGlobalMapping",
        ] {
            let at = script.find(command).unwrap();
            assert!(try_at < at && at < catch_at, "{command} is outside the try");
        }
        let catch = &script[catch_at..];
        assert!(catch.contains("[System.IO.StreamWriter]::new([Console]::OpenStandardError(), [System.Text.UTF8Encoding]::new($false))"));
        assert!(catch.contains(
            "$stderr.WriteLine(\"fargate-smb-error: step=$step win32=$win32 hresult=$hresult category=$category\")"
        ));
        assert!(catch.contains("$data.error_Code"));
        assert!(catch.contains("'^Windows System Error (\\d+),'"));
        assert!(catch.trim_end().ends_with("exit 1\n}"));
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

    /// What the script's catch writes for New-SmbGlobalMapping's 1219, as UTF-8 lines.
    const WRAPPED_1219: &str = "fargate-smb-error: step=map win32=1219 hresult=0x80131500 category=NotSpecified\r\nMultiple connections to a server or shared resource by the same user, using more than one user name, are not allowed. Disconnect all previous connections to the server or shared resource and try again.\r\n";

    /// Windows PowerShell 5.1's stderr for an error nothing caught, with a progress record
    /// first: the CLIXML of PowerShell/PowerShell#5912, the record laid out as csi-proxy#206
    /// shows New-SmbGlobalMapping's (wrapped at the console width), with 1312's message.
    const CLIXML_1312: &str = concat!(
        "#< CLIXML\r\n",
        "<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\">",
        "<Obj S=\"progress\" RefId=\"0\"><TN RefId=\"0\"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN><MS><I64 N=\"SourceId\">1</I64><PR N=\"Record\"><AV>Preparing modules for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj>",
        "<S S=\"Error\">New-SmbGlobalMapping : A specified logon session does not exist. It may already have been _x000D__x000A_</S>",
        "<S S=\"Error\">terminated. _x000D__x000A_</S>",
        "<S S=\"Error\">At line:1 char:190_x000D__x000A_</S>",
        "<S S=\"Error\">+ ... ser, $PWord;New-SmbGlobalMapping -RemotePath $Env:smbremotepath -Cred ..._x000D__x000A_</S>",
        "<S S=\"Error\">+                 ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~_x000D__x000A_</S>",
        "<S S=\"Error\">    + CategoryInfo          : NotSpecified: (MSFT_SmbGlobalMapping:ROOT/Microsoft/...mbGlobalMapping) [New-SmbGloba _x000D__x000A_</S>",
        "<S S=\"Error\">   lMapping], CimException_x000D__x000A_</S>",
        "<S S=\"Error\">    + FullyQualifiedErrorId : Windows System Error 1312,New-SmbGlobalMapping_x000D__x000A_</S>",
        "<S S=\"Error\"> _x000D__x000A_</S>",
        "</Objs>"
    );

    #[test]
    fn the_script_s_report_is_parsed() {
        let e = ScriptError::parse(WRAPPED_1219).unwrap();
        assert_eq!(e.step.as_deref(), Some("map"));
        assert_eq!(e.win32, Some(1219));
        assert_eq!(e.hresult, Some(0x8013_1500));
        assert_eq!(e.category.as_deref(), Some("NotSpecified"));
        assert!(e.message.starts_with("Multiple connections to a server"));
        assert!(e.message.ends_with("try again."));

        // Unknown fields are ignored, `-` is none, and noise before the report is skipped.
        let e = ScriptError::parse(
            "warning: something\n\u{feff}fargate-smb-error: step=credential win32=- hresult=0x80070057 category=InvalidArgument extra=1\nCannot bind argument to parameter 'String' because it is null.\n",
        )
        .unwrap();
        assert_eq!(e.win32, None);
        assert_eq!(e.hresult, Some(0x8007_0057));
        assert_eq!(e.step.as_deref(), Some("credential"));
        assert_eq!(
            e.message,
            "Cannot bind argument to parameter 'String' because it is null."
        );
        // What the host might add after the report is not the message.
        let e = ScriptError::parse(&format!("{WRAPPED_1219}{CLIXML_1312}")).unwrap();
        assert!(!e.message.contains("CLIXML"), "{}", e.message);

        assert_eq!(ScriptError::parse("created\n"), None);
        assert_eq!(ScriptError::parse(CLIXML_1312), None);
    }

    #[test]
    fn a_report_after_a_clixml_record_on_the_same_line_is_found() {
        // The host writes its records without newlines; a report right after a progress record
        // (and before the closing </Objs>) is still the report, and the XML is not its message.
        let progress = "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><Obj S=\"progress\" RefId=\"0\"><MS><PR N=\"Record\"><AV>Preparing modules for first use.</AV></PR></MS></Obj>";
        let e = ScriptError::parse(&format!("{progress}{WRAPPED_1219}</Objs>")).unwrap();
        assert_eq!(e.win32, Some(1219));
        assert!(e.message.ends_with("try again."), "{}", e.message);
    }

    #[test]
    fn clixml_error_records_become_text() {
        let text = clixml_errors(CLIXML_1312).unwrap();
        assert!(text.starts_with(
            "New-SmbGlobalMapping : A specified logon session does not exist. It may already have been \r\nterminated. \r\nAt line:1"
        ));
        assert!(!text.contains("Preparing modules"), "progress is left out");
        assert!(!text.contains("_x000D_"));
        let e = ScriptError::from_clixml(CLIXML_1312).unwrap();
        assert_eq!(e.win32, Some(1312));
        assert_eq!(e.category.as_deref(), Some("NotSpecified"));
        assert_eq!(
            e.message,
            "New-SmbGlobalMapping : A specified logon session does not exist. It may already have been terminated."
        );
        // A progress-only stream (the normal case for a script that succeeded) has no error.
        let progress_only = CLIXML_1312
            .split("<S S=\"Error\">")
            .next()
            .unwrap()
            .to_owned()
            + "</Objs>";
        assert_eq!(clixml_errors(&progress_only), None);
        assert_eq!(ScriptError::from_clixml("plain text"), None);
    }

    #[test]
    fn clixml_strings_decode() {
        assert_eq!(decode_clixml_string("a_x000D__x000A_b"), "a\r\nb");
        assert_eq!(
            decode_clixml_string("&lt;x&gt; &amp; &quot;&apos; &#65;&#x42;"),
            "<x> & \"' AB"
        );
        // An escaped underscore, a surrogate pair, and things that only look like escapes.
        assert_eq!(decode_clixml_string("_x005F_x0041_"), "_x0041_");
        assert_eq!(decode_clixml_string("_xD83D__xDE00_"), "\u{1F600}");
        assert_eq!(
            decode_clixml_string("_x12_ _xZZZZ_ & &bogus; _x"),
            "_x12_ _xZZZZ_ & &bogus; _x"
        );
        // Entities are decoded before the escapes, as XML reads the element first.
        assert_eq!(decode_clixml_string("&#95;x0041_"), "A");
    }

    #[test]
    fn quoting() {
        assert_eq!(ps_quote("a'b"), "'a''b'");
        assert_eq!(ps_quote("o\u{2019}brien"), "'o\u{2019}\u{2019}brien'");
        assert_eq!(ps_quote(r"\\fs\share"), r"'\\fs\share'");
        assert_eq!(decode(&encode_command("é'x")), "é'x");
    }
}
