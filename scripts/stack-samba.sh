# The Samba AD DC service of scripts/stack: a real Active Directory domain controller with an
# SMB share that keeps NT ACLs, on 127.0.0.1 only. Sourced by scripts/stack.
# shellcheck shell=bash
#
# Domain EXAMPLE / example.test, DC dc1. Provisioning (~10 s) happens once into
# .local/samba-template (never started); each start copies it afresh into .local/stack/samba
# (cp -a keeps the xattrs holding the NT ACLs), so every stack start is a clean domain.
# The Administrator password is random per template, in .local/samba-template/admin-password.

SAMBA_REALM="EXAMPLE.TEST"
SAMBA_DOMAIN="EXAMPLE"
SAMBA_BASE_DN="DC=example,DC=test"
SAMBA_TEMPLATE="$ROOT/.local/samba-template"
SAMBA_RUN="$STATE/samba"
SAMBA_CONF="$SAMBA_RUN/etc/smb.conf"
# The OU the tests and the demo create service accounts in.
SAMBA_OU="OU=fargate-smb,$SAMBA_BASE_DN"

samba_installed() {
  command -v samba >/dev/null && command -v samba-tool >/dev/null && command -v smbclient >/dev/null \
    && command -v ldapsearch >/dev/null && command -v smbcacls >/dev/null
}

# The template is rebuilt when this file changes.
samba_template_stamp() {
  sha256sum "$ROOT/scripts/stack-samba.sh" | cut -d' ' -f1
}

samba_provision() {
  samba_installed || die "Samba is not installed: run scripts/install"
  if [ "$(cat "$SAMBA_TEMPLATE/.stamp" 2>/dev/null)" = "$(samba_template_stamp)" ]; then
    return
  fi
  log "samba: provisioning the domain template (once, ~15 s)"
  rm -rf "$SAMBA_TEMPLATE"
  mkdir -p "$SAMBA_TEMPLATE"
  local t="$SAMBA_TEMPLATE"
  local password
  # 24 random alphanumerics plus fixed classes: meets the default complexity policy.
  password="Adm-$(head -c 64 /dev/urandom | tr -dc 'A-Za-z0-9' | head -c 24)-9x"
  (umask 077; printf '%s' "$password" > "$t/admin-password")
  : > "$t/empty.conf"
  # samba-tool takes the admin password only as an argument. This is a throwaway domain on
  # loopback whose password is in the file above anyway; the product's secrets never go this way.
  samba-tool domain provision -s "$t/empty.conf" --targetdir="$t/dc" --realm="$SAMBA_REALM" \
    --domain="$SAMBA_DOMAIN" --server-role=dc --host-name=dc1 --dns-backend=SAMBA_INTERNAL \
    --adminpass="$password" --use-rfc2307 --option="interfaces=lo" --option="bind interfaces only=yes" \
    >"$t/provision.log" 2>&1 || { tail -20 "$t/provision.log" >&2; die "samba: provision failed"; }
  local conf="$t/dc/etc/smb.conf"
  # Never forward DNS off the machine.
  sed -i '/dns forwarder/d' "$conf"
  mkdir -p "$t/dc/share" "$t/dc/bench" "$t/dc/tls" "$t/dc/pid" "$t/dc/log"
  python3 - "$conf" "$t/dc" <<'PY'
import sys
conf, base = sys.argv[1], sys.argv[2]
text = open(conf).read()
extra = f"""\tlog file = {base}/log/%m.log
\tlog level = 1
\tpid directory = {base}/pid
\tncalrpc dir = {base}/ncalrpc
\t# Without this the old password keeps working for NTLM and LDAP for 60 minutes after a reset.
\told password allowed period = 0
\ttls enabled = yes
\ttls keyfile = {base}/tls/key.pem
\ttls certfile = {base}/tls/cert.pem
\ttls cafile =
\tserver min protocol = SMB3
\tserver smb encrypt = desired
\tdns update command = /bin/true
\tspn update command = /bin/true
"""
text = text.replace("[global]\n", "[global]\n" + extra, 1)
text += f"""
[share]
\tpath = {base}/share
\tread only = No
\tvfs objects = dfs_samba4 acl_xattr
\t# Only the NT ACL decides, as on Windows and FSx: no POSIX ACL mapping underneath that
\t# could deny what the NT ACL grants (the share root below has no POSIX ACL and mode 0777).
\tacl_xattr:ignore system acls = yes

# For scripts/bench-smb only. Samba emulates Windows' case-insensitive names by scanning the
# folder whenever a new name is created (O(n) per file, so O(n^2) for a folder of n files); NTFS
# and FSx do not. The benchmark share turns that off so that it measures the clients.
[bench]
\tpath = {base}/bench
\tread only = No
\tvfs objects = dfs_samba4 acl_xattr
\tacl_xattr:ignore system acls = yes
\tcase sensitive = yes
"""
open(conf, "w").write(text)
PY
  # A local CA and a DC certificate it issued (SAN for the IP and the DC's name), as an enterprise
  # CA would: clients verify LDAPS against ca.pem; TLS libraries refuse a CA used as a leaf.
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=fargate-smb local CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$t/dc/tls/ca-key.pem" -out "$t/dc/tls/ca.pem" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=dc1.example.test" \
    -keyout "$t/dc/tls/key.pem" -out "$t/dc/tls/dc.csr" >/dev/null 2>&1
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:dc1.example.test,DNS:localhost\n' > "$t/dc/tls/dc.ext"
  openssl x509 -req -in "$t/dc/tls/dc.csr" -CA "$t/dc/tls/ca.pem" -CAkey "$t/dc/tls/ca-key.pem" -CAcreateserial \
    -days 3650 -extfile "$t/dc/tls/dc.ext" -out "$t/dc/tls/cert.pem" >/dev/null 2>&1
  rm -f "$t/dc/tls/ca-key.pem" "$t/dc/tls/dc.csr" "$t/dc/tls/dc.ext"
  chmod 600 "$t/dc/tls/key.pem"
  samba-tool domain passwordsettings set -s "$conf" --min-pwd-age=0 --max-pwd-age=0 >/dev/null
  samba-tool ou create "$SAMBA_OU" -s "$conf" >/dev/null
  local sid
  sid="$(samba-tool domain info 127.0.0.1 -s "$conf" 2>/dev/null | awk '/Domain SID/ {print $NF}')" || true
  [ -n "$sid" ] || sid="$(ldbsearch -H "$t/dc/private/sam.ldb" -s base -b "$SAMBA_BASE_DN" objectSid 2>/dev/null | awk '/^objectSid:/ {print $2}')"
  [ -n "$sid" ] || die "samba: could not read the domain SID"
  echo "$sid" > "$t/domain-sid"
  # Share root: SYSTEM, Administrators, Domain Admins full control (inherited by everything);
  # Authenticated Users may list the root only. Grants below the root are Custom::ShareAcl's job.
  samba-tool ntacl set "O:BAG:${sid}-513D:PARAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;${sid}-512)(A;;0x1200a9;;;AU)" \
    "$t/dc/share" -s "$conf" --service=share >/dev/null
  samba-tool ntacl set "O:BAG:${sid}-513D:PARAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;${sid}-512)" \
    "$t/dc/bench" -s "$conf" --service=bench >/dev/null
  # No POSIX ACLs under the shares (see "ignore system acls" above): Samba checks the NT ACL.
  python3 - "$t/dc/share" "$t/dc/bench" <<'PY'
import os, sys
for root in sys.argv[1:]:
    for name in ("system.posix_acl_access", "system.posix_acl_default"):
        try:
            os.removexattr(root, name)
        except OSError:
            pass
    os.chmod(root, 0o777)
PY
  samba_template_stamp > "$t/.stamp"
  log "samba: template ready (domain SID $sid)"
}

samba_ldaps_ready() {
  LDAPTLS_CACERT="$SAMBA_RUN/tls/ca.pem" ldapsearch -LLL -o nettimeout=2 -H ldaps://127.0.0.1 -x -b "" -s base defaultNamingContext >/dev/null 2>&1
}

samba_smb_ready() {
  smbclient -N -L //127.0.0.1 -s "$SAMBA_CONF" >/dev/null 2>&1
}

samba_ready() {
  samba_ldaps_ready && samba_smb_ready
}

samba_start() {
  if pid_alive "$STATE/samba.pid"; then
    log "samba: already running (pid $(cat "$STATE/samba.pid"))"
    return
  fi
  samba_provision
  if ss -ltn 2>/dev/null | grep -qE '127\.0\.0\.1:(445|636) '; then
    die "samba: something already listens on 127.0.0.1:445 or :636 (another DC?); stop it first"
  fi
  rm -rf "$SAMBA_RUN"
  mkdir -p "$STATE"
  cp -a "$SAMBA_TEMPLATE/dc" "$SAMBA_RUN"
  cp "$SAMBA_TEMPLATE/admin-password" "$SAMBA_TEMPLATE/domain-sid" "$SAMBA_RUN/"
  # Point every path of the copy at the copy.
  sed -i "s#$SAMBA_TEMPLATE/dc#$SAMBA_RUN#g" "$SAMBA_CONF"
  setsid samba -F --no-process-group -s "$SAMBA_CONF" >"$SAMBA_RUN/log/samba.out" 2>&1 < /dev/null &
  echo $! > "$STATE/samba.pid"
  if ! wait_for 60 samba_ready; then
    tail -20 "$SAMBA_RUN/log/samba.out" >&2 || true
    samba_stop
    die "samba: the DC did not become ready within 60 s (log above)"
  fi
  log "samba: ready — ldaps://127.0.0.1:636, //127.0.0.1/share, domain $SAMBA_DOMAIN (pid $(cat "$STATE/samba.pid"))"
}

samba_stop() {
  local pidfile="$STATE/samba.pid"
  if pid_alive "$pidfile"; then
    local pid
    pid="$(cat "$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    wait_for 10 bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
    log "samba: stopped (pid $pid)"
  fi
  # smbd, winbindd and samba-dcerpcd re-parent themselves: end those of this instance only,
  # matched by its own configuration path.
  if [ -f "$SAMBA_CONF" ]; then
    local stragglers
    stragglers="$(pgrep -f -- "$SAMBA_CONF" || true)"
    if [ -n "$stragglers" ]; then
      # shellcheck disable=SC2086
      kill -TERM $stragglers 2>/dev/null || true
      wait_for 5 bash -c "! pgrep -f -- '$SAMBA_CONF'" || pkill -KILL -f -- "$SAMBA_CONF" || true
    fi
  fi
  rm -f "$pidfile"
}

samba_status() {
  if pid_alive "$STATE/samba.pid"; then
    echo "samba    running  pid $(cat "$STATE/samba.pid")  ldaps://127.0.0.1:636  //127.0.0.1/share  $SAMBA_DOMAIN"
  else
    echo "samba    stopped"
  fi
}

samba_env() {
  cat <<ENV
export FARGATE_SMB_DC=127.0.0.1
export FARGATE_SMB_DOMAIN=$SAMBA_DOMAIN
export FARGATE_SMB_REALM=$SAMBA_REALM
export FARGATE_SMB_BASE_DN=$SAMBA_BASE_DN
export FARGATE_SMB_OU=$SAMBA_OU
export FARGATE_SMB_CA=$SAMBA_RUN/tls/ca.pem
export FARGATE_SMB_SMB_CONF=$SAMBA_CONF
export FARGATE_SMB_ADMIN_PASSWORD_FILE=$SAMBA_RUN/admin-password
export FARGATE_SMB_DOMAIN_SID_FILE=$SAMBA_RUN/domain-sid
ENV
}
