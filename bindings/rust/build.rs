// Links libls_train. The folder holding libls_train.so comes from LS_TRAIN_LIB_DIR, else the
// repository's build/ folder (two levels up from this crate). The crate's own test and example
// binaries also get that folder as an rpath, so they run without LD_LIBRARY_PATH.
use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LS_TRAIN_LIB_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = match env::var_os("LS_TRAIN_LIB_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
            manifest.join("..").join("..").join("build")
        }
    };
    let dir = dir.canonicalize().unwrap_or(dir);
    if !dir.join("libls_train.so").exists() {
        println!(
            "cargo:warning=libls_train.so not found in {}; set LS_TRAIN_LIB_DIR to the folder that holds it",
            dir.display()
        );
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=dylib=ls_train");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
}
