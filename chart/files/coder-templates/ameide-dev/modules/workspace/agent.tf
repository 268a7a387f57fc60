# The Coder agent and everything that runs inside the workspace container:
# kubectl namespace context, code-server (same container, no sidecar) and the
# best-effort Codex tooling. No script here blocks login or readiness.

resource "coder_agent" "main" {
  arch = data.coder_provisioner.me.arch
  os   = "linux"
  dir  = local.workspace_folder

  env = {
    WORKSPACE_NAMESPACE = var.namespace
    AMEIDE_ENVIRONMENT  = var.environment
    GIT_AUTHOR_NAME     = coalesce(data.coder_workspace_owner.me.full_name, data.coder_workspace_owner.me.name)
    GIT_AUTHOR_EMAIL    = data.coder_workspace_owner.me.email
    GIT_COMMITTER_NAME  = coalesce(data.coder_workspace_owner.me.full_name, data.coder_workspace_owner.me.name)
    GIT_COMMITTER_EMAIL = data.coder_workspace_owner.me.email
  }

  metadata {
    display_name = "CPU Usage"
    key          = "0_cpu_usage"
    script       = "coder stat cpu"
    interval     = 10
    timeout      = 1
  }

  metadata {
    display_name = "RAM Usage"
    key          = "1_ram_usage"
    script       = "coder stat mem"
    interval     = 10
    timeout      = 1
  }

  metadata {
    display_name = "Workspaces Disk"
    key          = "2_workspaces_disk"
    script       = "coder stat disk --path /workspaces"
    interval     = 60
    timeout      = 1
  }
}

# kubectl defaults to the workspace namespace, using the pod's own (in-cluster)
# service account token.
resource "coder_script" "kube_context" {
  agent_id           = coder_agent.main.id
  display_name       = "kubectl context"
  icon               = "/icon/k8s.png"
  run_on_start       = true
  start_blocks_login = false
  script             = <<-EOT
    #!/usr/bin/env bash
    set -u
    ns="${var.namespace}"
    sa=/var/run/secrets/kubernetes.io/serviceaccount
    if [ ! -s "$HOME/.kube/config" ] && [ -r "$sa/token" ]; then
      mkdir -p "$HOME/.kube"
      umask 077
      cat > "$HOME/.kube/config" <<KUBECONFIG
    apiVersion: v1
    kind: Config
    clusters:
      - name: in-cluster
        cluster:
          server: https://kubernetes.default.svc
          certificate-authority: $sa/ca.crt
    users:
      - name: workspace
        user:
          tokenFile: $sa/token
    contexts:
      - name: workspace
        context:
          cluster: in-cluster
          user: workspace
          namespace: $ns
    current-context: workspace
    KUBECONFIG
    fi
    if command -v kubectl >/dev/null 2>&1; then
      kubectl config set-context --current --namespace="$ns" >/dev/null 2>&1 || true
    fi
    echo "kubectl context namespace: $ns"
    exit 0
  EOT
}

# code-server runs in the workspace container itself, bound to loopback and
# reached only through the Coder agent.
resource "coder_script" "code_server" {
  agent_id           = coder_agent.main.id
  display_name       = "code-server"
  icon               = "/icon/code.svg"
  run_on_start       = true
  start_blocks_login = false
  script             = <<-EOT
    #!/usr/bin/env bash
    set -u
    bin="$(command -v code-server || true)"
    if [ -z "$bin" ]; then
      bin=/tmp/code-server/bin/code-server
      if [ ! -x "$bin" ]; then
        echo "installing code-server ${var.code_server_version} to /tmp/code-server"
        curl -fsSL https://code-server.dev/install.sh \
          | sh -s -- --method=standalone --prefix=/tmp/code-server --version=${var.code_server_version} \
          || { echo "code-server install failed"; exit 0; }
      fi
    fi
    "$bin" --auth none --bind-addr 127.0.0.1:13337 --disable-telemetry "${local.workspace_folder}" \
      >/tmp/code-server.log 2>&1 &
    exit 0
  EOT
}

resource "coder_app" "code-server" {
  agent_id     = coder_agent.main.id
  slug         = "code-server"
  display_name = "code-server"
  icon         = "/icon/code.svg"
  url          = "http://localhost:13337/?folder=${local.workspace_folder}"
  subdomain    = false
  share        = "owner"

  healthcheck {
    url       = "http://localhost:13337/healthz"
    interval  = 5
    threshold = 6
  }
}

# Seed Codex auth from the first mounted slot secret, in slot order.
resource "coder_script" "codex_auth" {
  count              = var.codex_enabled ? 1 : 0
  agent_id           = coder_agent.main.id
  display_name       = "Codex auth"
  icon               = "/icon/openai.svg"
  run_on_start       = true
  start_blocks_login = false
  script             = <<-EOT
    #!/usr/bin/env bash
    set -u
    umask 077
    mkdir -p "$HOME/.codex"
    found=""
    for slot in ${join(" ", local.codex_auth_slots)}; do
      src="${local.codex_auth_mount}/$slot/auth.json"
      if [ -s "$src" ]; then
        cp "$src" "$HOME/.codex/auth.json" && chmod 0600 "$HOME/.codex/auth.json" && found="$slot"
        break
      fi
    done
    if [ -n "$found" ]; then
      echo "codex: auth.json seeded from slot $found"
    else
      echo "codex: no auth slot mounted; run 'codex login' to sign in"
    fi
    config="$HOME/.codex/config.toml"
    touch "$config"
    # Top-level TOML keys must precede any [table], so (re)write it first.
    sed -i '/^[[:space:]]*cli_auth_credentials_store[[:space:]]*=/d' "$config" || true
    { echo 'cli_auth_credentials_store = "file"'; cat "$config"; } >"$config.tmp" \
      && mv "$config.tmp" "$config" && chmod 0600 "$config"
    exit 0
  EOT
}

# Best-effort Codex CLI install; never fails the workspace.
resource "coder_script" "codex_cli" {
  count              = var.codex_enabled ? 1 : 0
  agent_id           = coder_agent.main.id
  display_name       = "Codex CLI"
  icon               = "/icon/openai.svg"
  run_on_start       = true
  start_blocks_login = false
  script             = <<-EOT
    #!/usr/bin/env bash
    set -u
    if command -v codex >/dev/null 2>&1; then
      echo "codex already installed: $(command -v codex)"
      exit 0
    fi
    mkdir -p "$HOME/.local/bin"
    if command -v npm >/dev/null 2>&1 && npm install -g --prefix "$HOME/.local" @openai/codex; then
      echo "codex installed with npm"
    else
      case "$(uname -m)" in
        x86_64 | amd64) triple=x86_64-unknown-linux-musl ;;
        aarch64 | arm64) triple=aarch64-unknown-linux-musl ;;
        *) echo "codex: unsupported architecture $(uname -m)"; exit 0 ;;
      esac
      tmp="$(mktemp -d)"
      curl -fsSL "https://github.com/openai/codex/releases/latest/download/codex-$triple.tar.gz" \
        | tar -xz -C "$tmp" \
        && install -m 0755 "$tmp/codex-$triple" "$HOME/.local/bin/codex" \
        || echo "codex: install failed (continuing without it)"
      rm -rf "$tmp"
    fi
    grep -qs '.local/bin' "$HOME/.bashrc" || echo 'export PATH="$HOME/.local/bin:$PATH"' >>"$HOME/.bashrc" || true
    exit 0
  EOT
}

# Best-effort install of the Codex VS Code extension into code-server.
resource "coder_script" "codex_extension" {
  count              = var.codex_enabled ? 1 : 0
  agent_id           = coder_agent.main.id
  display_name       = "Codex VS Code extension"
  icon               = "/icon/openai.svg"
  run_on_start       = true
  start_blocks_login = false
  script             = <<-EOT
    #!/usr/bin/env bash
    set -u
    bin=""
    for _ in $(seq 1 60); do
      bin="$(command -v code-server || true)"
      if [ -z "$bin" ] && [ -x /tmp/code-server/bin/code-server ]; then
        bin=/tmp/code-server/bin/code-server
      fi
      [ -n "$bin" ] && break
      sleep 5
    done
    if [ -z "$bin" ]; then
      echo "code-server not found; skipping openai.chatgpt"
      exit 0
    fi
    "$bin" --install-extension openai.chatgpt || echo "could not install openai.chatgpt (continuing)"
    exit 0
  EOT
}
