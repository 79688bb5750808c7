fn main() {
    // The web page is embedded: a file added under ui/ rebuilds the crate.
    println!("cargo:rerun-if-changed=ui");
}
