use super::*;

#[test]
fn normalize_keeps_paths_below_the_base() {
    assert_eq!(normalize("/", "a/b"), "/a/b");
    assert_eq!(normalize("/", "/a//./b/"), "/a/b");
    assert_eq!(normalize("/", ""), "/");
    assert_eq!(normalize("/", "../../x"), "/x");
    assert_eq!(normalize("/base/p", "../x"), "/base/p/x");
    assert_eq!(normalize("/base/p", "/"), "/base/p");
}

#[test]
fn glob_matches_like_go_filepath_match() {
    assert!(glob_match("*.zst", "a.zst"));
    assert!(!glob_match("*.zst", "a.zst.x"));
    assert!(glob_match("0000000?", "00000001"));
    assert!(glob_match("[a-c]x", "bx"));
    assert!(!glob_match("[^a-c]x", "bx"));
    assert!(glob_match("[^a-c]x", "dx"));
    assert!(glob_match("\\*", "*"));
    assert!(!glob_match("[", "["));
    assert!(glob_match("*", ""));
}

#[test]
fn codecs_resolve_aliases_and_name_the_supported_set() {
    assert_eq!(
        codec("zstd-better").map(|c| c.name).ok(),
        Some("zstd-better-compression")
    );
    let e = codec("s2-default")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("not supported") && e.contains("zstd-fastest"),
        "{e}"
    );
    assert!(codec("brotli").is_err());
}

#[test]
fn every_codec_round_trips() {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for c in CODECS {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::ErrorKind::Other)?
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut enc = encoder(*c, Box::new(Shared(buf.clone()))).expect("encoder");
        enc.write_all(&data).expect("compress");
        enc.finish_stream().expect("finish");
        let compressed = buf.lock().expect("lock").clone();
        let mut dec = decoder(*c, Box::new(std::io::Cursor::new(compressed))).expect("decoder");
        let mut back = Vec::new();
        dec.read_to_end(&mut back).expect("decompress");
        assert_eq!(back, data, "{}", c.name);
    }
}
