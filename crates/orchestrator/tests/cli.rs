//! The `workflow-worker` binary as a user meets it first: `--help` works, says what it is and
//! lists every registered compute provider. (Being an integration test of this package, it also
//! makes `cargo test --workspace` build the binary that the end-to-end tests in `tests/` run.)

use std::process::Command;

#[test]
fn help_describes_the_binary() {
    let output = Command::new(env!("CARGO_BIN_EXE_workflow-worker"))
        .arg("--help")
        .output()
        .expect("run workflow-worker --help");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("Workflow worker"), "{help}");
    assert!(help.contains("Usage: workflow-worker"), "{help}");
    for provider in tea_compute::registry::PROVIDERS {
        let listed = format!("`{}` ({})", provider.name, provider.about);
        assert!(help.contains(&listed), "--help lists {listed}: {help}");
    }
}
