//! A plugin uploaded through the page's form (a file chosen in `input[type=file]`) is
//! installed into the server's plugin directory, listed with its hash, and runs: a template
//! that names it completes.

use serde_json::json;
use tasker_tests::browser::{Api, Browser, listening};
use tasker_tests::cli::{Db, plugin_dir, scratch};

use super::store_name;

async fn upload_a_plugin_and_run_it(db: Db) {
    let store = store_name(&db);
    // A plugin directory of this test's own, holding only noop: the upload is new to it.
    let plugins = scratch("ui-plugins");
    std::fs::copy(
        plugin_dir().join("noop@0.1.0.wasm"),
        plugins.join("noop@0.1.0.wasm"),
    )
    .unwrap();
    // The component to upload: echo, under a name of its own.
    let upload = scratch("ui-upload").join("ui_echo@1.2.0.wasm");
    std::fs::copy(plugin_dir().join("echo@0.1.0.wasm"), &upload).unwrap();
    let hash = format!(
        "blake3:{}",
        blake3::hash(&std::fs::read(&upload).unwrap()).to_hex()
    );
    let row = format!("#plugins tr[data-plugin-hash=\"{hash}\"]");

    let (_server, base) = listening(&db, &plugins, "dev", &["--workers", "2"]);
    let api = Api::new(&base, None);
    let b = Browser::start(&format!("plugins-{store}")).await;
    b.goto(&format!("{base}/ui/plugins")).await;
    b.wait_page("plugins").await;
    b.wait_for("#plugins tr[data-plugin-hash]").await;
    assert_eq!(b.count(&row).await, 0, "not installed yet");

    b.wait_for("form#plugin-upload input[type=\"file\"][name=\"plugin\"]")
        .await
        .send_keys(&upload.display().to_string())
        .await
        .expect("a file chosen");
    // The form may ask for the name and version (it guesses them from name@version.wasm).
    for (field, value) in [("name", "ui_echo"), ("version", "1.2.0")] {
        let css = format!("form#plugin-upload input[name=\"{field}\"]");
        if b.count(&css).await > 0 {
            b.type_into(&css, value).await;
        }
    }
    b.click("form#plugin-upload button[data-action=\"upload\"]")
        .await;
    // An upload may be confirmed first, like the other actions.
    let asked = b
        .wait_js(
            "the upload to be listed or to ask for confirmation",
            "const d = document.querySelector('dialog#confirm');
             if (d !== null && d.open) return 'confirm';
             return document.querySelector(arguments[0]) !== null ? 'listed' : null",
            vec![json!(row)],
        )
        .await;
    if asked == "confirm" {
        b.confirm(true).await;
    }
    b.wait_for(&row).await;
    assert!(
        b.text(&row).await.contains("ui_echo"),
        "the row names the plugin"
    );
    assert_eq!(
        std::fs::read(plugins.join("ui_echo@1.2.0.wasm")).ok(),
        std::fs::read(&upload).ok(),
        "installed into the plugin directory"
    );
    let listed = api.get("/v1/plugins/ui_echo@1.2.0").await;
    assert_eq!(listed["hash"], hash.as_str());

    // It runs.
    api.register(
        "namespace: ui\nname: uploaded\nversion: 1.0.0\nsteps:\n\
         \x20 - { name: greet, handler: ui_echo@1.2.0 }\n",
    )
    .await;
    let id = api
        .submit(
            "ui/uploaded@1.0.0",
            json!({"greeting": "hello from the page"}),
        )
        .await;
    b.goto(&format!("{base}/ui/tasks/{id}")).await;
    b.wait_page("task").await;
    b.wait_attr("#task-state", "data-state", "complete").await;
    super::wait_node(&b, "greet", "complete").await;
    let step = api.step_id(id, "greet").await;
    let detail = api.get(&format!("/v1/steps/{step}")).await;
    // (An attempt names its build by the bare hex digest.)
    assert_eq!(
        detail["attempt_history"][0]["plugin_hash"],
        hash.trim_start_matches("blake3:"),
        "the uploaded build ran"
    );
    b.assert_no_console_errors(&[]).await;
    b.close().await;
}

tasker_tests::cli_on_both_backends!(upload_a_plugin_and_run_it);
