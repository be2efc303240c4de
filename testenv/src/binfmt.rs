//! qemu-user-static registered through binfmt_misc, so that `RUN` steps of arm64 and arm images
//! really run under emulation. The handlers must carry the F flag (the kernel opens the interpreter
//! at registration), otherwise a build inside a chroot or mount namespace cannot find it.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use tokio::process::Command;

use crate::process::run;

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";
const HANDLERS: &[&str] = &["qemu-aarch64", "qemu-arm"];
const FIX: &str = "install qemu-user-static and binfmt-support (hack/install-deps.sh), as root";

/// Environments that start side by side (tests run in parallel) may both find it missing: whoever
/// loses the race finds it done by the other.
pub async fn ensure() -> Result<()> {
    let register = Path::new(BINFMT).join("register");
    if !register.exists() {
        let mounted = run(Command::new("mount").args(["-t", "binfmt_misc", "binfmt_misc", BINFMT])).await;
        if !register.exists() {
            mounted.with_context(|| format!("mounting binfmt_misc on {BINFMT} (needs root)"))?;
        }
    }
    for handler in HANDLERS {
        if check(handler).is_err() {
            let enabled = run(Command::new("update-binfmts").args(["--enable", handler])).await;
            if check(handler).is_err() {
                enabled.with_context(|| format!("enabling the {handler} binfmt handler; {FIX}"))?;
            }
        }
        check(handler).with_context(|| format!("binfmt handler {handler}; {FIX}"))?;
    }
    Ok(())
}

/// The handler file says `enabled` and has a flags line containing F.
fn check(handler: &str) -> Result<()> {
    let path = Path::new(BINFMT).join(handler);
    let text = fs::read_to_string(&path).with_context(|| format!("{} is missing", path.display()))?;
    ensure!(text.lines().next() == Some("enabled"), "{} is disabled", path.display());
    let flags = text.lines().find_map(|l| l.strip_prefix("flags:")).unwrap_or("");
    ensure!(
        flags.contains('F'),
        "{} lacks the F flag (flags:{flags}); qemu-user-static registers it so",
        path.display()
    );
    Ok(())
}
