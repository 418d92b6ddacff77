//! A stand-in for powershell.exe and appcmd.exe in the tests, where Windows' own tools do not
//! exist (Linux, Wine). It records how it was called — argv and the whole environment — as one
//! JSON line in $FAKE_TOOL_LOG, so the tests can check where the password went and where it did
//! not, and answers the way the real tool does:
//! - PowerShell (`-EncodedCommand`): prints $FAKE_TOOL_MAP_OUTCOME (default `created`) and exits
//!   $FAKE_TOOL_MAP_EXIT (default 0); it fails like the script would if no password arrived.
//!   With $FAKE_TOOL_MAP_FAIL set to `report:<win32>` it fails as the script's `catch` reports a
//!   failure of New-SmbGlobalMapping (the plain-text line, then Windows' message), and with
//!   `clixml:<win32>` as Windows PowerShell 5.1 reports an error nothing caught (a progress
//!   record, then the error record as CLIXML); both exit 1. $FAKE_TOOL_MAP_FAIL_ECHO_PASSWORD=1
//!   puts the password it received into the message, as a careless tool might.
//! - `appcmd list vdir`: prints $FAKE_TOOL_VDIR_PATH and exits 0, or exits 1 when it is unset.
//! - `appcmd list config`: prints $FAKE_TOOL_CONFIG (default: a request filtering section with
//!   IIS's default hidden segments only) and exits 0.
//! - `appcmd add|set ...`: exits 0, or, for an argument `/section:<name>` equal to
//!   $FAKE_TOOL_FAIL_SECTION, prints an appcmd-style error and exits 1.
//!
//! With $FAKE_TOOL_MAP_WAIT_FOR set, PowerShell first waits (at most two minutes) until that file
//! exists: a mapping that takes as long as the test wants, so a test can act while the
//! entrypoint is provably past its start and before its main process exists.

use std::io::Write as _;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    if let Ok(path) = std::env::var("FAKE_TOOL_LOG") {
        let line = serde_json::json!({ "argv": argv, "env": env });
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    if argv.iter().any(|a| a == "-EncodedCommand") {
        if let Ok(path) = std::env::var("FAKE_TOOL_MAP_WAIT_FOR") {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while !std::path::Path::new(&path).exists() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        if std::env::var("FARGATE_SMB_PASSWORD").map_or(true, |p| p.is_empty()) {
            eprintln!(
                "ConvertTo-SecureString : Cannot bind argument to parameter 'String' because it is null."
            );
            std::process::exit(1);
        }
        if let Ok(how) = std::env::var("FAKE_TOOL_MAP_FAIL") {
            fail_mapping(&how);
        }
        let outcome = std::env::var("FAKE_TOOL_MAP_OUTCOME").unwrap_or_else(|_| "created".into());
        println!("{outcome}");
        let code = std::env::var("FAKE_TOOL_MAP_EXIT")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        std::process::exit(code);
    }
    if let Ok(section) = std::env::var("FAKE_TOOL_FAIL_SECTION")
        && argv.iter().any(|a| a == &format!("/section:{section}"))
    {
        println!("ERROR ( message:Cannot commit configuration changes. )");
        std::process::exit(1);
    }
    if argv.get(1).map(String::as_str) == Some("list")
        && argv.get(2).map(String::as_str) == Some("config")
    {
        let section = std::env::var("FAKE_TOOL_CONFIG").unwrap_or_else(|_| {
            "<system.webServer>\r\n  <security>\r\n    <requestFiltering>\r\n      <hiddenSegments applyToWebDAV=\"true\">\r\n        <add segment=\"web.config\" />\r\n        <add segment=\"bin\" />\r\n      </hiddenSegments>\r\n    </requestFiltering>\r\n  </security>\r\n</system.webServer>".into()
        });
        println!("{section}");
        return;
    }
    if argv.get(1).map(String::as_str) == Some("list") {
        match std::env::var("FAKE_TOOL_VDIR_PATH") {
            Ok(path) => println!("{path}"),
            Err(_) => std::process::exit(1),
        }
    }
}

/// Windows' messages for the errors the tests use (System Error Codes), as FormatMessage words
/// them.
fn win32_message(code: u32) -> &'static str {
    match code {
        5 => "Access is denied.",
        53 => "The network path was not found.",
        67 => "The network name cannot be found.",
        1219 => {
            "Multiple connections to a server or shared resource by the same user, using more than one user name, are not allowed. Disconnect all previous connections to the server or shared resource and try again."
        }
        1312 => "A specified logon session does not exist. It may already have been terminated.",
        1326 => "The user name or password is incorrect.",
        1909 => "The referenced account is currently locked out and may not be logged on to.",
        _ => "The network connection was aborted by the local system.",
    }
}

/// Fail the way `how` says (see the module's documentation) and exit 1.
fn fail_mapping(how: &str) -> ! {
    let (form, code) = how.split_once(':').unwrap_or((how, "1326"));
    let code: u32 = code.parse().unwrap_or(1326);
    let mut message = win32_message(code).to_owned();
    if std::env::var("FAKE_TOOL_MAP_FAIL_ECHO_PASSWORD").as_deref() == Ok("1") {
        let password = std::env::var("FARGATE_SMB_PASSWORD").unwrap_or_default();
        message = format!("{message} (password {password})");
    }
    let mut err = std::io::stderr().lock();
    if form == "clixml" {
        // The host writes each formatted line as one <S S="Error"> string, XML-escaped, with
        // its line end as _x000D__x000A_.
        let escape = |line: &str| {
            line.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace("_x", "_x005F_x")
        };
        let lines = [
            format!("New-SmbGlobalMapping : {message}"),
            "At line:1 char:1".to_owned(),
            "+ New-SmbGlobalMapping -RemotePath $remote -LocalPath $local -Credential ...".to_owned(),
            "+ ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~".to_owned(),
            "    + CategoryInfo          : NotSpecified: (MSFT_SmbGlobalMapping:ROOT/Microsoft/...mbGlobalMapping) [New-SmbGlobalMapping], CimException".to_owned(),
            format!("    + FullyQualifiedErrorId : Windows System Error {code},New-SmbGlobalMapping"),
            " ".to_owned(),
        ];
        let records: String = lines
            .iter()
            .map(|l| format!("<S S=\"Error\">{}_x000D__x000A_</S>", escape(l)))
            .collect();
        let _ = write!(
            err,
            "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><Obj S=\"progress\" RefId=\"0\"><TN RefId=\"0\"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN><MS><I64 N=\"SourceId\">1</I64><PR N=\"Record\"><AV>Preparing modules for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj>{records}</Objs>"
        );
    } else {
        let _ = write!(
            err,
            "fargate-smb-error: step=map win32={code} hresult=0x80131500 category=NotSpecified\r\n{message}\r\n"
        );
    }
    let _ = err.flush();
    std::process::exit(1);
}
