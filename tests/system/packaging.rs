//! The Debian package (issue 17): with it installed, an allowlist client's proxy runs
//! from the packaged template units and `/usr/bin/sandboxctl`, and `enable` leaves no
//! template unit or binary copy in the home (per-user copies from before the package
//! would shadow its units, so they go). Ignored elsewhere: `tests/system/package-lane.sh`
//! installs the package and runs these by name with `SANDBOXCTL_BIN=/usr/bin/sandboxctl`.

use std::path::Path;

use crate::harness::{env, sbx, unit_property};
use crate::network::{Upstream, client_allowing, curl};

const PACKAGED_SERVICE: &str = "/usr/lib/systemd/user/sandboxctl-proxy@.service";
const PACKAGED_SOCKET: &str = "/usr/lib/systemd/user/sandboxctl-proxy@.socket";

#[test]
#[ignore = "needs the package installed: run by tests/system/package-lane.sh"]
fn pk1_an_allowlist_client_runs_on_the_packaged_units() {
    let env = env();
    assert_eq!(
        env.bin,
        Path::new("/usr/bin/sandboxctl"),
        "run with SANDBOXCTL_BIN=/usr/bin/sandboxctl (tests/system/package-lane.sh)"
    );
    for f in [PACKAGED_SERVICE, PACKAGED_SOCKET] {
        assert!(Path::new(f).is_file(), "{f} is not installed");
    }
    // Per-user copies as an `enable` before the package left them.
    let user_units = env.home.join(".config/systemd/user");
    let copy = env.home.join(".local/libexec/sandboxctl/sandboxctl");
    std::fs::create_dir_all(&user_units).expect("user unit dir");
    std::fs::create_dir_all(copy.parent().expect("dir")).expect("libexec dir");
    for f in ["sandboxctl-proxy@.service", "sandboxctl-proxy@.socket"] {
        std::fs::write(
            user_units.join(f),
            "[Unit]\nDescription=stale per-user copy\n",
        )
        .expect("stale unit");
    }
    std::fs::write(&copy, "#!/bin/sh\nexit 1\n").expect("stale copy");

    let up = Upstream::start("pk1");
    let c = client_allowing("pk1", &up);
    for f in ["sandboxctl-proxy@.service", "sandboxctl-proxy@.socket"] {
        let p = user_units.join(f);
        assert!(
            !p.exists(),
            "`enable` left {} (it shadows the package's)",
            p.display()
        );
    }
    assert!(
        !copy.exists(),
        "`enable` left the binary copy {}",
        copy.display()
    );
    let dropin = user_units.join(format!(
        "sandboxctl-proxy@{}.service.d/sandboxctl.conf",
        c.name
    ));
    let text = std::fs::read_to_string(&dropin).expect("the client's drop-in");
    assert!(
        text.contains("ExecStart=\"/usr/bin/sandboxctl\" proxy"),
        "{text}"
    );

    c.start();
    let out = curl(&c, &format!("http://{}/", up.authority()));
    assert_eq!(out.stdout, up.body, "through the packaged proxy:\n{out}");

    let service = format!("sandboxctl-proxy@{}.service", c.name);
    let socket = format!("sandboxctl-proxy@{}.socket", c.name);
    assert_eq!(unit_property(&service, "FragmentPath"), PACKAGED_SERVICE);
    assert_eq!(unit_property(&socket, "FragmentPath"), PACKAGED_SOCKET);
    let exec = unit_property(&service, "ExecStart");
    assert!(
        exec.contains("path=/usr/bin/sandboxctl "),
        "the proxy does not run the packaged binary: {exec}"
    );

    let out = sbx(["doctor"]).run();
    assert!(
        out.stdout
            .contains("packaged: /usr/lib/systemd/user runs /usr/bin/sandboxctl"),
        "doctor does not say the packaged units are in use:\n{out}"
    );
}
