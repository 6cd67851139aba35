//! Compiles the cuDNN shim (feature `cudnn`) with the host C++ compiler: no nvcc.
//!
//! Headers: cudnn-frontend from `CUDNN_FRONTEND_INCLUDE` (default
//! `~/.cache/cudnn-fe/pkg/include`, where `scripts/gpu/setup-kernels.sh` unpacks the
//! PyPI wheel `nvidia-cudnn-frontend`), CUDA and cuDNN headers from `CUDA_HOME/include`
//! (`../shared/gpu/setup-cuda.sh --cudnn`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo:rerun-if-env-changed=CUDNN_FRONTEND_INCLUDE");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-changed=csrc/fused.cu");
    #[cfg(feature = "cudnn")]
    build_shim();
    #[cfg(feature = "fused")]
    build_ptx();
    #[cfg(feature = "sass")]
    embed_sass();
}

/// Feature `sass`: `csrc/fused.cu` → `$OUT_DIR/fused.cubin`, and `$OUT_DIR/sass_images.rs`
/// embedding every `HASH-LEN-NAME.cubin` in `SHOAL_SASS_DIR` (written by
/// `scripts/gpu/build.sh` from the PTX the binary dumps; absent or empty: no candle images).
#[cfg(feature = "sass")]
fn embed_sass() {
    use std::fmt::Write as _;
    use std::path::PathBuf;
    println!("cargo:rerun-if-env-changed=SHOAL_SASS_DIR");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    nvcc(
        &["-cubin", "-O3", &format!("-arch=sm_{cap}")],
        &out.join("fused.cubin"),
    );
    let mut rows = String::new();
    if let Ok(dir) = std::env::var("SHOAL_SASS_DIR") {
        println!("cargo:rerun-if-changed={dir}");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            let Some(stem) = f
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".cubin"))
            else {
                continue;
            };
            let mut parts = stem.splitn(3, '-');
            let (Some(hash), Some(len), Some(_name)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(hash), Ok(len)) = (u64::from_str_radix(hash, 16), len.parse::<usize>()) else {
                continue;
            };
            let _ = writeln!(
                rows,
                "    (0x{hash:016x}, {len}, include_bytes!({:?})),",
                f.display().to_string()
            );
        }
    }
    let cubin = out.join("fused.cubin").display().to_string();
    let src = format!(
        "pub(super) const ARCH: u32 = {cap};\npub(super) static CANDLE: &[(u64, usize, &[u8])] = &[\n{rows}];\npub(super) static FUSED: &[u8] = include_bytes!({cubin:?});\n"
    );
    if let Err(e) = std::fs::write(out.join("sass_images.rs"), src) {
        eprintln!("shoal-kernels: cannot write sass_images.rs: {e}");
        std::process::exit(1);
    }
}

/// `csrc/fused.cu` → `$OUT_DIR/fused.ptx` with nvcc (`CUDA_HOME/bin/nvcc`, else `nvcc`
/// on the PATH), for `CUDA_COMPUTE_CAP` (default 90).
#[cfg(feature = "fused")]
fn build_ptx() {
    use std::path::PathBuf;
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("fused.ptx");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    nvcc(&["-ptx", "-O3", &format!("-arch=sm_{cap}")], &out);
}

/// Runs nvcc (`CUDA_HOME/bin/nvcc`, else `nvcc` on the PATH) on `csrc/fused.cu` with
/// `args`, writing `out`; a failure ends the build with the reason.
#[cfg(feature = "fused")]
fn nvcc(args: &[&str], out: &std::path::Path) {
    use std::path::PathBuf;
    let nvcc = std::env::var("CUDA_HOME")
        .map(|h| PathBuf::from(h).join("bin/nvcc"))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let status = std::process::Command::new(&nvcc)
        .args(args)
        .arg("csrc/fused.cu")
        .arg("-o")
        .arg(out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!("shoal-kernels: {} failed on csrc/fused.cu ({s})", nvcc.display());
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!(
                "shoal-kernels: cannot run {} ({e}); source the CUDA toolchain (../shared/gpu/setup-cuda.sh)",
                nvcc.display()
            );
            std::process::exit(1);
        }
    }
}

#[cfg(feature = "cudnn")]
fn build_shim() {
    use std::path::PathBuf;
    let home = std::env::var("HOME").unwrap_or_default();
    let fe = std::env::var("CUDNN_FRONTEND_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(&home).join(".cache/cudnn-fe/pkg/include"));
    let cuda = std::env::var("CUDA_HOME")
        .map(|p| PathBuf::from(p).join("include"))
        .unwrap_or_else(|_| PathBuf::from("/usr/local/cuda/include"));
    for (what, dir, file) in [
        ("cudnn-frontend (CUDNN_FRONTEND_INCLUDE)", &fe, "cudnn_frontend.h"),
        ("CUDA/cuDNN (CUDA_HOME)", &cuda, "cudnn.h"),
    ] {
        if !dir.join(file).exists() {
            println!(
                "cargo:warning=shoal-kernels: {what} headers not found: {} has no {file}; run scripts/gpu/setup-kernels.sh",
                dir.display()
            );
        }
    }
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("csrc/shim.cpp")
        .include(&fe)
        .include(&cuda)
        .define("NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING", None)
        .flag_if_supported("-Wno-deprecated-declarations")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-unused-function")
        .opt_level(2)
        .compile("shoal_cudnn_shim");
    println!("cargo:rustc-link-lib=dylib=stdc++");
    println!("cargo:rustc-link-lib=dylib=dl");
}
