#!/usr/bin/env python3
"""Writes a copy of the registry's candle-core with one hook added, for the GPU build.

candle-core loads its kernel modules (and custom ones) from PTX text, so the driver
JIT-compiles about 5 MB of PTX on a machine whose compute cache is empty: ~30 s before
the first image (docs/PERFORMANCE.md, session 4). The hook lets the application hand
candle a precompiled image (SASS for this GPU, compiled with ptxas at build time) for a
given PTX text; with no hook, no image, or an image the driver refuses, candle loads the
PTX exactly as before.

The copy is made from the crate cargo downloaded (nothing of candle is kept in this
repository) into DEST, and every edit must match exactly once: a candle version whose
text differs fails here, loudly, instead of building something else.

    patch-candle.py REGISTRY_CRATE_DIR DEST
"""

import shutil
import sys
from pathlib import Path

HOOK = '''

/// shoal: a precompiled module image (cubin) for a PTX text, if the application has one.
pub type ModuleImageHook = fn(&str) -> Option<&'static [u8]>;

static MODULE_IMAGE_HOOK: std::sync::OnceLock<ModuleImageHook> = std::sync::OnceLock::new();

/// shoal: installs the hook that maps a module's PTX text to a precompiled image
/// (false when one was installed already).
pub fn set_module_image_hook(hook: ModuleImageHook) -> bool {
    MODULE_IMAGE_HOOK.set(hook).is_ok()
}

/// shoal: the precompiled image for `ptx` if the hook has one and the driver takes it,
/// else the PTX (JIT-compiled by the driver, as candle always does).
fn load_module_or_image(
    context: &std::sync::Arc<cudarc::driver::CudaContext>,
    ptx: &str,
) -> std::result::Result<std::sync::Arc<cudarc::driver::CudaModule>, cudarc::driver::DriverError> {
    if let Some(image) = MODULE_IMAGE_HOOK.get().and_then(|hook| hook(ptx)) {
        if let Ok(module) = context.load_module(cudarc::nvrtc::Ptx::from_binary(image.to_vec())) {
            return Ok(module);
        }
    }
    context.load_module(ptx.into())
}
'''

EDITS = {
    "src/cuda_backend/device.rs": [
        (
            "let cuda_module = self.context.load_module(ptx.into()).w()?;",
            "let cuda_module = load_module_or_image(&self.context, ptx).w()?;",
        ),
        (
            "let cuda_module = self.context.load_module(mdl.ptx().into()).w()?;",
            "let cuda_module = load_module_or_image(&self.context, mdl.ptx()).w()?;",
        ),
    ],
    "src/cuda_backend/mod.rs": [
        (
            "pub use device::{CudaDevice, DeviceId};",
            "pub use device::{set_module_image_hook, CudaDevice, DeviceId, ModuleImageHook};",
        ),
    ],
}


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, dest = Path(sys.argv[1]), Path(sys.argv[2])
    if not (src / "src/cuda_backend/device.rs").is_file():
        print(f"patch-candle: {src} is not a candle-core source folder", file=sys.stderr)
        return 2
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    for rel, edits in EDITS.items():
        path = dest / rel
        text = path.read_text()
        for old, new in edits:
            n = text.count(old)
            if n != 1:
                print(f"patch-candle: {rel}: expected 1 match of {old!r}, found {n}", file=sys.stderr)
                return 1
            text = text.replace(old, new)
        if rel.endswith("device.rs"):
            text += HOOK
        path.write_text(text)
    # The registry copy carries cargo's checksum file; a path crate needs none.
    (dest / ".cargo-checksum.json").unlink(missing_ok=True)
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
