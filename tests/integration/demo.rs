//! The README's first command: `lynq demo` runs on its own local environment to its interactive
//! point and shows each scripted step's resources appearing and disappearing.

use std::process::Command;

#[test]
fn demo_runs_its_script_and_shows_each_step() {
    let log_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lynq-env-logs").join("demo-test");
    let output = Command::new(env!("CARGO_BIN_EXE_lynq"))
        .args(["demo", "--exit-after-script", "--log-dir"])
        .arg(&log_dir)
        .output()
        .expect("running lynq demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "lynq demo failed ({}):\n{stdout}\n{stderr}", output.status);

    let steps: Vec<&str> = stdout.split("\n▶ ").skip(1).collect();
    assert_eq!(steps.len(), 5, "five scripted steps expected:\n{stdout}");
    let shows = |step: usize, what: &str| {
        assert!(steps[step].contains(what), "step {} should show {what:?}:\n{}", step + 1, steps[step]);
    };
    shows(0, "LynqNode acme-web-app created");
    shows(0, "Deployment acme-app applied (plan=pro)");
    shows(0, "Service acme-svc applied");
    shows(0, "LynqNode acme-web-app Ready");
    shows(1, "Deployment acme-app applied (plan=enterprise)");
    shows(2, "LynqNode acme-web-app deleted");
    shows(2, "Deployment acme-app and Service acme-svc deleted");
    shows(3, "LynqNode acme-web-app created");
    shows(4, "Deployment acme-app and Service acme-svc deleted");
    assert!(stdout.contains("environment stopped and removed"), "the environment is cleaned up:\n{stdout}");
    for step in &steps {
        assert!(step.contains(" ms  "), "each milestone carries its delay from the commit:\n{step}");
    }
}
