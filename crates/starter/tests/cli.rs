//! The `starter` binary as a user meets it first: `--help` works and says what it is. (Being an
//! integration test of this package, it also makes `cargo test --workspace` build the binary
//! that the end-to-end tests in `tests/` run.)

use std::process::Command;

#[test]
fn help_describes_the_binary() {
    let output = Command::new(env!("CARGO_BIN_EXE_starter"))
        .arg("--help")
        .output()
        .expect("run starter --help");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("Starts TriggerExternalWorkflow runs"),
        "{help}"
    );
    assert!(help.contains("Usage: starter"), "{help}");
}
