fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    session_reaper::cli::main()
}

/// glibc gives each thread that allocates its own arena (up to 8 per core), and
/// memory freed in one is kept there: a daemon whose blocking threads come and go
/// ends up holding several megabytes it does not use (10 file targets: 23 MB
/// resident instead of 19). Two arenas are plenty for two async workers. An
/// operator's own `MALLOC_ARENA_MAX` wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it runs before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
