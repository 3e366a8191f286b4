//! Tiny images built locally through the Docker API (no registry is
//! reachable here): a static busybox with an HTTP server.
//!
//! [`build_http_image`] sends a build context (`FROM scratch`, the rootfs,
//! `CMD`) to `POST /build`. The image's start script prints a line, exits
//! with code 1 after printing `$CRASH` if that is set, writes `$VERSION`
//! (default `v1`) to `/index.html`, writes `/health` after `$HEALTHY_AFTER`
//! seconds (default 0) unless `UNHEALTHY` is set, and `exec`s
//! `httpd -f -p ${PORT:-8080}`. Two CGI scripts stream in both directions:
//! `POST /cgi-bin/echo` answers its body, `GET /cgi-bin/bytes?N` answers
//! N × 64 KiB of zeros; `GET /cgi-bin/env` answers the server's environment
//! (what the workload really got, secret variables included). With
//! `$WEBSOCKET` set it serves a WebSocket echo instead (`nc -ll` running
//! `/bin/ws.sh` per connection: short frames echoed, any other request
//! answered 200 `ws`, `/health` included).
//! [`derive_image`] layers `ENV` lines on top, which makes a different image
//! with the same code — enough for rollout and rollback tests.

use bollard::Docker;
use bollard::query_parameters::BuildImageOptions;
use futures::StreamExt;

use crate::{Error, paths};

/// Applets linked into the image's `/bin`.
const APPLETS: &[&str] = &[
    "sh", "httpd", "sleep", "cat", "echo", "env", "ls", "true", "false", "wget", "kill", "head",
    "mkdir", "rm", "ps", "dd", "printf", "nc", "od", "sha1sum", "base64", "tr", "cut",
];

const CGI_ECHO: &str =
    "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\nexec cat\n";
const CGI_ENV: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nexec env\n";
const CGI_BYTES: &str = "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\nexec dd if=/dev/zero bs=65536 count=\"${QUERY_STRING:-1}\" 2>/dev/null\n";

/// One connection on stdin/stdout: the WebSocket handshake (the accept
/// key from `sha1sum` and `base64`), then frames of up to 125 bytes
/// unmasked and echoed (ping answered with pong, close with close); a
/// request without a key answers 200 `ws`.
const WS: &str = r#"#!/bin/sh
key=""
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  case "$line" in
    [Ss]ec-[Ww]eb[Ss]ocket-[Kk]ey:*) key=$(printf '%s' "${line#*:}" | tr -d ' ') ;;
  esac
done
if [ -z "$key" ]; then
  printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nws\n'
  exit 0
fi
byte() { printf '\\%03o' "$1"; }
digest=$(printf '%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11' "$key" | sha1sum | cut -c1-40)
raw=""
while [ -n "$digest" ]; do
  rest=${digest#??}
  raw="$raw$(byte $((0x${digest%"$rest"})))"
  digest=$rest
done
accept=$(printf "$raw" | base64)
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n' "$accept"
while :; do
  set -- $(dd bs=1 count=2 2>/dev/null | od -An -tu1 -v)
  [ $# -eq 2 ] || exit 0
  op=$(($1 & 15))
  len=$(($2 & 127))
  [ "$len" -le 125 ] || exit 0
  set -- $(dd bs=1 count=$((4 + len)) 2>/dev/null | od -An -tu1 -v)
  m0=$1 m1=$2 m2=$3 m3=$4
  shift 4
  out=""
  i=0
  for b in "$@"; do
    case $((i % 4)) in 0) m=$m0 ;; 1) m=$m1 ;; 2) m=$m2 ;; *) m=$m3 ;; esac
    out="$out$(byte $((b ^ m)))"
    i=$((i + 1))
  done
  case $op in
    8) printf "$(byte 136)$(byte 0)"; exit 0 ;;
    9) printf "$(byte 138)$(byte "$len")$out" ;;
    1|2) printf "$(byte $((128 | op)))$(byte "$len")$out" ;;
  esac
done
"#;

const START: &str = r#"#!/bin/sh
echo "starting ${VERSION:-v1} on port ${PORT:-8080}"
if [ -n "$CRASH" ]; then echo "$CRASH" >&2; exit 1; fi
if [ -n "$WEBSOCKET" ]; then exec nc -ll -p "${PORT:-8080}" -e /bin/ws.sh; fi
echo "${VERSION:-v1}" > /www/index.html
if [ -z "$UNHEALTHY" ]; then (sleep "${HEALTHY_AFTER:-0}"; echo ok > /www/health) & fi
exec httpd -f -v -p "${PORT:-8080}" -h /www
"#;

/// Builds the HTTP image as `tag` through `POST /build`.
pub async fn build_http_image(docker: &Docker, tag: &str) -> Result<(), Error> {
    let busybox = std::fs::read(paths::system_program("busybox")?)
        .map_err(|e| Error::io("read the busybox binary", e))?;
    let mut tar = tar::Builder::new(Vec::new());
    let io = |e| Error::io("pack the build context", e);
    append(
        &mut tar,
        "Dockerfile",
        0o644,
        b"FROM scratch\nCOPY rootfs/ /\nEXPOSE 8080\nCMD [\"/bin/start.sh\"]\n",
    )
    .map_err(io)?;
    for dir in [
        "rootfs",
        "rootfs/bin",
        "rootfs/www",
        "rootfs/www/cgi-bin",
        "rootfs/etc",
        "rootfs/tmp",
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if dir.ends_with("tmp") { 0o1777 } else { 0o755 });
        header.set_size(0);
        tar.append_data(&mut header, dir, std::io::empty())
            .map_err(io)?;
    }
    append(&mut tar, "rootfs/bin/busybox", 0o755, &busybox).map_err(io)?;
    for applet in APPLETS {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        tar.append_link(&mut header, format!("rootfs/bin/{applet}"), "busybox")
            .map_err(io)?;
    }
    append(&mut tar, "rootfs/bin/start.sh", 0o755, START.as_bytes()).map_err(io)?;
    append(&mut tar, "rootfs/bin/ws.sh", 0o755, WS.as_bytes()).map_err(io)?;
    append(
        &mut tar,
        "rootfs/www/cgi-bin/echo",
        0o755,
        CGI_ECHO.as_bytes(),
    )
    .map_err(io)?;
    append(
        &mut tar,
        "rootfs/www/cgi-bin/bytes",
        0o755,
        CGI_BYTES.as_bytes(),
    )
    .map_err(io)?;
    append(
        &mut tar,
        "rootfs/www/cgi-bin/env",
        0o755,
        CGI_ENV.as_bytes(),
    )
    .map_err(io)?;
    append(
        &mut tar,
        "rootfs/etc/passwd",
        0o644,
        b"root:x:0:0:root:/:/bin/sh\n",
    )
    .map_err(io)?;
    let context = tar.into_inner().map_err(io)?;
    build(docker, tag, context).await
}

/// Builds `tag` as `base` plus `ENV` lines.
pub async fn derive_image(
    docker: &Docker,
    base: &str,
    tag: &str,
    env: &[(&str, &str)],
) -> Result<(), Error> {
    let mut dockerfile = format!("FROM {base}\n");
    for (key, value) in env {
        // Quoted, so values may hold spaces.
        let value = value.replace('\\', "\\\\").replace('"', "\\\"");
        dockerfile.push_str(&format!("ENV {key}=\"{value}\"\n"));
    }
    let mut tar = tar::Builder::new(Vec::new());
    append(&mut tar, "Dockerfile", 0o644, dockerfile.as_bytes())
        .map_err(|e| Error::io("pack the build context", e))?;
    let context = tar
        .into_inner()
        .map_err(|e| Error::io("pack the build context", e))?;
    build(docker, tag, context).await
}

fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    tar.append_data(&mut header, path, data)
}

async fn build(docker: &Docker, tag: &str, context: Vec<u8>) -> Result<(), Error> {
    build_context(
        docker,
        tag,
        None,
        context,
        std::time::Duration::from_secs(120),
    )
    .await
}

/// Builds `context` (a tar with a `Dockerfile` at its root) as `tag`
/// through `POST /build` — the Dockerfile's `target` stage when given —
/// following the build until it ends; fails with the engine's message, or
/// after `limit`.
pub async fn build_context(
    docker: &Docker,
    tag: &str,
    target: Option<&str>,
    context: Vec<u8>,
    limit: std::time::Duration,
) -> Result<(), Error> {
    let what = format!("build image {tag}");
    let mut progress = docker.build_image(
        BuildImageOptions {
            t: Some(tag.to_owned()),
            target: target.unwrap_or_default().to_owned(),
            dockerfile: "Dockerfile".into(),
            rm: true,
            ..Default::default()
        },
        None,
        Some(bollard::body_full(bytes::Bytes::from(context))),
    );
    let run = async {
        while let Some(step) = progress.next().await {
            let step = step.map_err(|e| Error::request(&what, e))?;
            if let Some(error) = step.error_detail.and_then(|d| d.message) {
                return Err(Error::request(&what, error));
            }
        }
        Ok(())
    };
    tokio::time::timeout(limit, run)
        .await
        .map_err(|_| Error::request(&what, format!("no result after {limit:?}")))?
}
