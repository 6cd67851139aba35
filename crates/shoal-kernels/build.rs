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
}

/// `csrc/fused.cu` → `$OUT_DIR/fused.ptx` with nvcc (`CUDA_HOME/bin/nvcc`, else `nvcc`
/// on the PATH), for `CUDA_COMPUTE_CAP` (default 90).
#[cfg(feature = "fused")]
fn build_ptx() {
    use std::path::PathBuf;
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("fused.ptx");
    let nvcc = std::env::var("CUDA_HOME")
        .map(|h| PathBuf::from(h).join("bin/nvcc"))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let status = std::process::Command::new(&nvcc)
        .args(["-ptx", "-O3", &format!("-arch=sm_{cap}"), "csrc/fused.cu", "-o"])
        .arg(&out)
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
