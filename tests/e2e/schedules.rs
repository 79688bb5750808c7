//! `tasker schedules` from the CLI: create (with a context file), list with next fire times,
//! pause, resume, delete; bad input refused naming the field, nothing written; the same
//! through `--server`; and a `tasker serve` firing an every-minute schedule by itself.

use std::time::Duration;

use tasker_tests::cli::*;

const TEMPLATE: &str = "namespace: tests\nname: sched\nversion: 1.0.0\n\
context_schema: {type: object, required: [region], properties: {region: {type: string}}}\n\
steps:\n  - {name: a, handler: noop@0.1.0}\n";

fn cli(db: &Db, args: &[&str]) -> (bool, String, String) {
    let mut c = tasker(db, &plugin_dir());
    c.args(args);
    let out = run(c);
    (out.status.success(), stdout(&out), stderr(&out))
}

async fn schedules_from_the_cli(db: Db) {
    let dir = scratch("schedules-cli");
    let file = dir.join("sched.yaml");
    std::fs::write(&file, TEMPLATE).unwrap();
    let ctx = dir.join("ctx.json");
    std::fs::write(&ctx, r#"{"region": "eu"}"#).unwrap();
    let ctx_arg = format!("@{}", ctx.display());
    let (ok, _, err) = cli(&db, &["templates", "register", file.to_str().unwrap()]);
    assert!(ok, "{err}");

    let (ok, out, err) = cli(
        &db,
        &[
            "schedules",
            "create",
            "hourly",
            "--cron",
            "0 * * * *",
            "--tz",
            "Europe/Paris",
            "--template",
            "tests/sched@1.0.0",
            "--context",
            &ctx_arg,
            "--missed",
            "run_once",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("schedule 'hourly' saved; next: "), "{out}");
    let (ok, out, _) = cli(&db, &["schedules", "list"]);
    assert!(ok);
    assert!(out.contains("hourly"), "{out}");
    assert!(out.contains("0 * * * * Europe/Paris"), "{out}");
    assert!(out.contains("tests/sched@1.0.0"), "{out}");
    assert!(out.contains("run_once"), "{out}");
    assert!(
        out.contains("CET") || out.contains("CEST"),
        "local time shown: {out}"
    );

    // Bad input: refused with the field named, nothing written.
    for (args, says) in [
        (
            vec!["--cron", "61 * * * *"],
            "--cron: '61 * * * *' is not a cron pattern",
        ),
        (
            vec!["--tz", "Mars/Base"],
            "--tz: 'Mars/Base' is not an IANA time zone",
        ),
        (
            vec!["--context", r#"{"region": 5}"#],
            "context/region: does not match",
        ),
        (
            vec!["--template", "tests/nope@1.0.0"],
            "template: unknown template tests/nope@1.0.0",
        ),
    ] {
        let mut flags = vec![
            ("--template", "tests/sched@1.0.0"),
            ("--cron", "0 * * * *"),
            ("--context", r#"{"region": "eu"}"#),
        ];
        for pair in args.chunks(2) {
            flags.retain(|(f, _)| *f != pair[0]);
            flags.push((pair[0], pair[1]));
        }
        let mut all = vec!["schedules", "create", "other"];
        for (f, v) in flags {
            all.extend([f, v]);
        }
        let (ok, _, err) = cli(&db, &all);
        assert!(!ok, "{all:?}");
        assert!(err.contains(says), "{all:?}: {err}");
    }
    assert_eq!(count(&db, "SELECT count(*) FROM schedules").await, 1);

    let (ok, out, _) = cli(&db, &["schedules", "pause", "hourly"]);
    assert!(ok);
    assert!(
        out.contains("schedule 'hourly' paused; next: paused"),
        "{out}"
    );
    let (_, out, _) = cli(&db, &["schedules", "list"]);
    assert!(out.contains("paused"), "{out}");
    let (ok, out, _) = cli(&db, &["schedules", "resume", "hourly"]);
    assert!(ok);
    assert!(out.contains("resumed; next: 2"), "{out}");
    let (ok, out, _) = cli(&db, &["schedules", "delete", "hourly"]);
    assert!(ok);
    assert!(out.contains("schedule 'hourly' deleted"), "{out}");
    let (ok, _, err) = cli(&db, &["schedules", "delete", "hourly"]);
    assert!(!ok);
    assert!(err.contains("no schedule named 'hourly'"), "{err}");
    let (ok, _, err) = cli(&db, &["schedules", "pause", "hourly"]);
    assert!(!ok);
    assert!(err.contains("schedule 'hourly'"), "{err}");

    // Through a server, which also fires them (an every-minute schedule, within ~70 s).
    let (_server, url) = crate::dead_letters::serve(&db);
    let remote = |args: &[&str]| {
        let mut all = vec!["--server", url.as_str()];
        all.extend(args);
        cli(&db, &all)
    };
    let (ok, out, err) = remote(&[
        "schedules",
        "create",
        "minutely",
        "--cron",
        "* * * * *",
        "--template",
        "tests/sched@1.0.0",
        "--context",
        &ctx_arg,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("schedule 'minutely' saved; next: "), "{out}");
    let (ok, _, err) = remote(&[
        "schedules",
        "create",
        "bad",
        "--cron",
        "* * * * *",
        "--template",
        "tests/sched@1.0.0",
        "--context",
        "{}",
    ]);
    assert!(!ok);
    assert!(err.contains("422") && err.contains("/context"), "{err}");
    let (ok, out, _) = remote(&["schedules", "list"]);
    assert!(ok);
    assert!(
        out.contains("minutely") && out.contains("* * * * * UTC"),
        "{out}"
    );
    wait_for(
        &db,
        "SELECT count(*) FROM tasks WHERE identity_key LIKE 'schedule:minutely:%'",
        1,
        Duration::from_secs(90),
    )
    .await;
    let (ok, out, _) = remote(&["schedules", "pause", "minutely"]);
    assert!(ok);
    assert!(out.contains("paused"), "{out}");
    let (ok, out, _) = remote(&["schedules", "delete", "minutely"]);
    assert!(ok, "{out}");
    let (ok, _, err) = remote(&["schedules", "delete", "minutely"]);
    assert!(!ok);
    assert!(err.contains("404"), "{err}");
    assert_eq!(count(&db, "SELECT count(*) FROM schedules").await, 0);
}

tasker_tests::cli_on_both_backends!(schedules_from_the_cli);
