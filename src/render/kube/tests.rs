//! Tests of `kube`.

use super::pod::*;
use super::proxy::*;
use super::restricted::*;
use super::yaml::*;
use super::*;

#[test]
fn yaml_quotes_every_string_and_nests_blocks() {
    let v = json!({
        "a": "x\ny: \"z\"\u{2028}",
        "on": [1, {"k": true, "l": []}, [2]],
        "m": {},
    });
    assert_eq!(
        yaml(&v),
        "a: \"x\\ny: \\\"z\\\"\\u2028\"\nm: {}\n\"on\":\n- 1\n- k: true\n  l: []\n- - 2\n"
    );
}

#[test]
fn base64_pads() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foob\n"), "Zm9vYgo=");
}

#[test]
fn quantities_use_binary_suffixes() {
    assert_eq!(quantity("1g"), "1Gi");
    assert_eq!(quantity("512m"), "512Mi");
    assert_eq!(tmpfs_size("rw,size=1g,mode=1777").as_deref(), Some("1Gi"));
}

#[test]
fn namespaces_are_dns_labels() {
    assert!(check_namespace("team-a").is_ok());
    for bad in ["", "Team", "-a", "a-", "a.b", &"x".repeat(64)] {
        assert!(check_namespace(bad).is_err(), "{bad}");
    }
}

/// A pod that meets `restricted`, and each field that breaks it.
#[test]
fn restricted_check_catches_each_field() {
    let good = json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "a", "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        }}],
        "volumes": [{"name": "v", "emptyDir": {}}, {"name": "p", "persistentVolumeClaim": {"claimName": "c"}}],
    });
    assert_eq!(restricted_violations(&good), Vec::<String>::new());
    let cases: [(&str, Value); 12] = [
        ("/hostNetwork", json!(true)),
        ("/hostPID", json!(true)),
        ("/hostIPC", json!(true)),
        (
            "/volumes/0",
            json!({"name": "v", "hostPath": {"path": "/"}}),
        ),
        ("/securityContext/runAsNonRoot", json!(false)),
        ("/securityContext/seccompProfile/type", json!("Unconfined")),
        (
            "/securityContext/sysctls",
            json!([{"name": "a", "value": "1"}]),
        ),
        ("/containers/0/securityContext/privileged", json!(true)),
        (
            "/containers/0/securityContext/allowPrivilegeEscalation",
            json!(true),
        ),
        (
            "/containers/0/securityContext/capabilities/drop",
            json!(["NET_RAW"]),
        ),
        (
            "/containers/0/securityContext/capabilities/add",
            json!(["SYS_ADMIN"]),
        ),
        ("/containers/0/securityContext/runAsUser", json!(0)),
    ];
    for (pointer, value) in cases {
        let mut bad = good.clone();
        let (parent, field) = pointer.rsplit_once('/').expect("pointer");
        let target = bad.pointer_mut(parent).expect(parent);
        match target {
            Value::Array(a) => a[field.parse::<usize>().expect("index")] = value,
            _ => target[field] = value,
        }
        assert_eq!(restricted_violations(&bad).len(), 1, "{pointer}");
    }
    let mut port = good.clone();
    port["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 80}]);
    assert_eq!(restricted_violations(&port).len(), 1);
    let mut proc_mount = good;
    proc_mount["containers"][0]["securityContext"]["procMount"] = json!("Unmasked");
    assert_eq!(restricted_violations(&proc_mount).len(), 1);
}
