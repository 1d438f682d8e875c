fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    session_reaper::cli::main()
}

/// glibc gives each thread that allocates its own arena (up to 8 per core), and
/// memory freed in one is kept there: a daemon whose blocking threads come and go
/// ends up holding several megabytes it does not use (10 file targets on 2 cores:
/// 23 MB resident instead of 19). One arena per core (at least two) serves the
/// async workers, one per core. An operator's own `MALLOC_ARENA_MAX` wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = cores.clamp(2, 64) as libc::c_int;
        // SAFETY: mallopt only sets an allocator parameter; it runs before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
