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
    #[cfg(feature = "gemm")]
    build_gemm();
}

/// Feature `gemm`: `csrc/geglu_gemm.cu` (CUTLASS, sm_90a) → `$OUT_DIR/libshoal_gemm.a` with
/// nvcc, linked with the CUDA runtime (static). CUTLASS's headers from `CUTLASS_INCLUDE`
/// (default where `scripts/gpu/setup-kernels.sh cutlass` unpacks the wheel `nvidia-cutlass`).
#[cfg(feature = "gemm")]
fn build_gemm() {
    use std::path::PathBuf;
    println!("cargo:rerun-if-changed=csrc/geglu_gemm.cu");
    println!("cargo:rerun-if-env-changed=CUTLASS_INCLUDE");
    let home = std::env::var("HOME").unwrap_or_default();
    let include = std::env::var("CUTLASS_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(&home).join(".cache/cutlass-pypi/pkg/cutlass_library/source/include")
        });
    if !include.join("cutlass/cutlass.h").exists() {
        eprintln!(
            "shoal-kernels: CUTLASS headers not found in {} (CUTLASS_INCLUDE); run scripts/gpu/setup-kernels.sh cutlass",
            include.display()
        );
        std::process::exit(1);
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    let obj = out.join("geglu_gemm.o");
    run(
        &nvcc_path(),
        &[
            "-c".as_ref(),
            "-O3".as_ref(),
            "-arch=sm_90a".as_ref(),
            "-std=c++17".as_ref(),
            "--expt-relaxed-constexpr".as_ref(),
            "-DNDEBUG".as_ref(),
            "-Xcompiler".as_ref(),
            "-fPIC".as_ref(),
            "-I".as_ref(),
            include.as_os_str(),
            "csrc/geglu_gemm.cu".as_ref(),
            "-o".as_ref(),
            obj.as_os_str(),
        ],
    );
    let lib = out.join("libshoal_gemm.a");
    let _ = std::fs::remove_file(&lib);
    run("ar".as_ref(), &["crs".as_ref(), lib.as_os_str(), obj.as_os_str()]);
    let cuda = std::env::var("CUDA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| "/usr/local/cuda".into());
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=shoal_gemm");
    for dir in ["lib", "lib64"] {
        if cuda.join(dir).join("libcudart_static.a").exists() {
            println!("cargo:rustc-link-search=native={}", cuda.join(dir).display());
        }
    }
    println!("cargo:rustc-link-lib=static=cudart_static");
    for l in ["stdc++", "dl", "rt", "pthread"] {
        println!("cargo:rustc-link-lib=dylib={l}");
    }
}

/// nvcc: `CUDA_HOME/bin/nvcc`, else `nvcc` on the PATH.
#[cfg(feature = "fused")]
fn nvcc_path() -> std::path::PathBuf {
    use std::path::PathBuf;
    std::env::var("CUDA_HOME")
        .map(|h| PathBuf::from(h).join("bin/nvcc"))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"))
}

/// Runs `prog args`; a failure ends the build with the reason.
#[cfg(feature = "fused")]
fn run(prog: &std::path::Path, args: &[&std::ffi::OsStr]) {
    match std::process::Command::new(prog).args(args).status() {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!("shoal-kernels: {} failed ({s})", prog.display());
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!(
                "shoal-kernels: cannot run {} ({e}); source the CUDA toolchain (../shared/gpu/setup-cuda.sh)",
                prog.display()
            );
            std::process::exit(1);
        }
    }
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
    nvcc(&["-cubin", "-O3", &fused_arch(&cap)], &out.join("fused.cubin"));
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
    nvcc(&["-ptx", "-O3", &fused_arch(&cap)], &out);
}

/// nvcc's target for `csrc/fused.cu` on compute capability `cap`: Hopper's own (`sm_90a`,
/// whose warpgroup MMAs the flash attention kernel uses) for 90, else `sm_{cap}`.
#[cfg(feature = "fused")]
fn fused_arch(cap: &str) -> String {
    if cap == "90" {
        "-arch=sm_90a".into()
    } else {
        format!("-arch=sm_{cap}")
    }
}

/// Runs nvcc (`CUDA_HOME/bin/nvcc`, else `nvcc` on the PATH) on `csrc/fused.cu` with
/// `args`, writing `out`; a failure ends the build with the reason.
#[cfg(feature = "fused")]
fn nvcc(args: &[&str], out: &std::path::Path) {
    let nvcc = nvcc_path();
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    all.extend(["csrc/fused.cu".as_ref(), "-o".as_ref(), out.as_os_str()]);
    run(&nvcc, &all);
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
