//! The user sandboxctl runs as: the name its uid has in `/etc/passwd`, else `$USER`.

/// This process's user name; `None` when neither names it.
pub fn name() -> Option<String> {
    let uid = rustix::process::getuid().as_raw();
    name_of(
        &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
        uid,
    )
    .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
}

/// The name of `uid` in a passwd file's text.
fn name_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse() == Ok(uid)).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_uid_field_names_the_user() {
        let passwd = "root:x:0:0::/root:/bin/sh\nsbx:x:1001:1001::/home/sbx:/bin/sh\n";
        assert_eq!(super::name_of(passwd, 1001).as_deref(), Some("sbx"));
        assert_eq!(super::name_of(passwd, 7), None);
    }
}
