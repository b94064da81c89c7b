//! Builds the eBPF tc programs of `src/bpf/*.c` with clang into `OUT_DIR`.
//!
//! Choice when clang is missing: the build still succeeds (the daemon and translator do not need
//! BPF to run), an empty object is written and `AUTOCLAT_BPF_MISSING` carries the reason, so that
//! the loader reports "fast path not built: …" at run time and `autoclat status` shows it. Set
//! `AUTOCLAT_REQUIRE_BPF=1` to make a missing clang fail the build instead (packagers, CI). A C
//! program that does not compile always fails the build: that is a defect, not a missing tool.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAMS: &[&str] = &["clat"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(autoclat_bpf_missing)");
    println!("cargo::rerun-if-env-changed=AUTOCLAT_REQUIRE_BPF");
    println!("cargo::rerun-if-env-changed=CLANG");
    println!("cargo::rerun-if-changed=src/bpf");

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let required = env::var("AUTOCLAT_REQUIRE_BPF").is_ok_and(|v| v == "1");

    if let Err(reason) = Command::new(&clang).arg("--version").output() {
        let reason = format!("`{clang}` was not found when autoclat was built ({reason}); install clang, libbpf-dev and linux-libc-dev and rebuild");
        if required {
            panic!("AUTOCLAT_REQUIRE_BPF=1: {reason}");
        }
        println!("cargo::warning=eBPF fast path not built: {reason}");
        println!("cargo::rustc-cfg=autoclat_bpf_missing");
        println!("cargo::rustc-env=AUTOCLAT_BPF_MISSING={reason}");
        for name in PROGRAMS {
            std::fs::write(out_dir.join(format!("{name}.bpf.o")), b"")
                .expect("write placeholder object");
        }
        return;
    }

    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").unwrap_or_default();
    let target = if endian == "big" { "bpfeb" } else { "bpfel" };
    // Debian's multiarch directory holds <asm/types.h>, which <linux/bpf.h> includes.
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        "x86" => "i386-linux-gnu",
        other => other,
    };

    for name in PROGRAMS {
        let src = Path::new("src/bpf").join(format!("{name}.c"));
        let obj = out_dir.join(format!("{name}.bpf.o"));
        let output = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", target])
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .output()
            .expect("run clang");
        if !output.status.success() {
            panic!(
                "clang failed to build {} (needs libbpf-dev and linux-libc-dev headers):\n{}",
                src.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}
