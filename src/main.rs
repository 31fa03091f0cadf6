//! The `airlift` command line: argument parsing and printing; the work is in the library.

mod cli;

fn main() -> std::process::ExitCode {
    cap_malloc_arenas();
    cli::main()
}

/// glibc gives each allocating thread (tokio's workers and blocking pool) its own arena, and
/// freed memory stays resident in each: a 1,000-image import peaked at 66 MiB of RSS with two
/// arenas, 50 MiB with one, for a 35 MiB heap. Export and verify of the bench corpus timed
/// the same with one arena as before (their hot paths reuse buffers).
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
