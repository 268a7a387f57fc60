# The workspace pod: one container running envbuilder, which clones the
# repository with the developer's own GitHub token, builds the image described
# by .devcontainer/coder (no Docker daemon, not privileged) and then execs the
# Coder agent inside the built image.

data "coder_provisioner" "me" {}
data "coder_workspace" "me" {}
data "coder_workspace_owner" "me" {}

# The developer's own GitHub OAuth token (Coder external auth). Coder asks the
# developer to link GitHub before the workspace can be built.
data "coder_external_auth" "github" {
  id = "github"
}

locals {
  name             = "coder-${lower(data.coder_workspace.me.id)}"
  repo_name        = trimsuffix(basename(var.repo_url), ".git")
  workspace_folder = "/workspaces/${local.repo_name}"
  username         = data.coder_workspace_owner.me.name
  # Per-user home (spec: /home/<user>). The emptyDir is mounted there and the agent exports it
  # as HOME, whatever user the devcontainer image runs as.
  home_dir = "/home/${local.username}"

  # Labels the reaper uses to find orphaned workspace pods, Deployments and credentials
  # Secrets (jobs/reap.py). Keep them exact.
  labels = {
    "app.kubernetes.io/name"    = "coder-workspace"
    "app.kubernetes.io/part-of" = "coder"
    "com.coder.workspace.id"    = data.coder_workspace.me.id
    "com.coder.workspace.name"  = data.coder_workspace.me.name
    "com.coder.user.id"         = data.coder_workspace_owner.me.id
    "com.coder.user.username"   = data.coder_workspace_owner.me.name
    "com.coder.template.name"   = var.template_name
  }

  # Codex auth slot secrets, in the order they are tried. Each is mounted
  # (optionally) by the kubelet at <codex_auth_mount>/<slot>/auth.json; the
  # workspace service account itself never reads secrets from the API.
  codex_auth_slots = [
    "codex-auth-rotating-0",
    "codex-auth-rotating-1",
    "codex-auth-rotating-2",
    "codex-auth-0",
    "codex-auth-1",
    "codex-auth-2",
  ]
  codex_auth_mount = "/var/run/codex-auth"
}

locals {
  # The developer's GitHub token and the agent token. They live only in the Secret below,
  # referenced by name: every workspace's service account may read Deployments and Pods in
  # this namespace (kubectl inside the workspace), and must not read another developer's
  # credentials from their env. The workspace service account has no access to Secrets.
  credentials = {
    ENVBUILDER_GIT_PASSWORD = data.coder_external_auth.github.access_token
    CODER_AGENT_TOKEN       = coder_agent.main.token
  }

  # The coder provider issues a new agent token on every plan, and coderd accepts only the
  # latest build's. The pod reads the Secret only when it starts, so the pod template carries a
  # hash of the credentials (never their value): a new token changes the template and rolls the
  # pod onto it, as Coder's own examples do by putting the token in the pod env.
  pod_annotations = {
    "checksum/credentials" = sha256(jsonencode(local.credentials))
  }
}

resource "kubernetes_secret_v1" "credentials" {
  count = data.coder_workspace.me.start_count

  metadata {
    name      = "${local.name}-credentials"
    namespace = var.namespace
    labels    = local.labels
  }

  data = local.credentials
}

resource "kubernetes_deployment_v1" "workspace" {
  count            = data.coder_workspace.me.start_count
  wait_for_rollout = false

  metadata {
    name      = local.name
    namespace = var.namespace
    labels    = local.labels
    annotations = {
      "com.coder.user.email" = data.coder_workspace_owner.me.email
    }
  }

  spec {
    replicas = 1

    selector {
      match_labels = {
        "com.coder.workspace.id" = data.coder_workspace.me.id
      }
    }

    strategy {
      type = "Recreate"
    }

    template {
      metadata {
        labels      = local.labels
        annotations = local.pod_annotations
      }

      spec {
        service_account_name = var.service_account_name
        # Only so kubectl works inside the workspace; the service account's
        # RBAC (Helm chart) grants no access to secrets.
        automount_service_account_token = true
        # No *_SERVICE_HOST variables for other services in the namespace.
        enable_service_links = false

        container {
          name              = "dev"
          image             = var.envbuilder_image
          image_pull_policy = "IfNotPresent"

          # envbuilder builds the devcontainer as root, but never privileged.
          security_context {
            privileged  = false
            run_as_user = 0
          }

          env {
            name  = "ENVBUILDER_GIT_URL"
            value = var.repo_url
          }
          env {
            name  = "ENVBUILDER_GIT_USERNAME"
            value = "x-access-token"
          }
          env {
            name = "ENVBUILDER_GIT_PASSWORD"
            value_from {
              secret_key_ref {
                name = kubernetes_secret_v1.credentials[0].metadata[0].name
                key  = "ENVBUILDER_GIT_PASSWORD"
              }
            }
          }
          env {
            name  = "ENVBUILDER_DEVCONTAINER_DIR"
            value = ".devcontainer/coder"
          }
          env {
            name  = "ENVBUILDER_WORKSPACE_FOLDER"
            value = local.workspace_folder
          }
          env {
            name  = "ENVBUILDER_INIT_SCRIPT"
            value = coder_agent.main.init_script
          }
          # When the devcontainer does not build, envbuilder starts this image instead of
          # exiting (which would restart the pod in a loop with no way in to fix it).
          dynamic "env" {
            for_each = var.fallback_image == "" ? [] : [var.fallback_image]
            content {
              name  = "ENVBUILDER_FALLBACK_IMAGE"
              value = env.value
            }
          }
          # Layer cache in a registry; empty (the default) = no cache, every start builds.
          dynamic "env" {
            for_each = var.cache_repo == "" ? [] : [var.cache_repo]
            content {
              name  = "ENVBUILDER_CACHE_REPO"
              value = env.value
            }
          }
          env {
            name  = "CODER_AGENT_URL"
            value = data.coder_workspace.me.access_url
          }
          env {
            name = "CODER_AGENT_TOKEN"
            value_from {
              secret_key_ref {
                name = kubernetes_secret_v1.credentials[0].metadata[0].name
                key  = "CODER_AGENT_TOKEN"
              }
            }
          }
          env {
            name  = "WORKSPACE_NAMESPACE"
            value = var.namespace
          }
          env {
            name  = "AMEIDE_ENVIRONMENT"
            value = var.environment
          }

          resources {
            requests = {
              cpu    = var.cpu_request
              memory = var.memory_request
            }
            limits = {
              cpu    = var.cpu_limit
              memory = var.memory_limit
            }
          }

          volume_mount {
            name       = "workspaces"
            mount_path = "/workspaces"
          }
          volume_mount {
            name       = "home"
            mount_path = local.home_dir
          }
          dynamic "volume_mount" {
            for_each = var.codex_enabled ? local.codex_auth_slots : []
            content {
              name       = volume_mount.value
              mount_path = "${local.codex_auth_mount}/${volume_mount.value}"
              read_only  = true
            }
          }
        }

        volume {
          name = "workspaces"
          empty_dir {}
        }
        volume {
          name = "home"
          empty_dir {}
        }
        dynamic "volume" {
          for_each = var.codex_enabled ? local.codex_auth_slots : []
          content {
            name = volume.value
            secret {
              secret_name = volume.value
              optional    = true
              # Readable by the unprivileged devcontainer user; the codex-auth
              # script copies it to ~/.codex/auth.json with mode 0600.
              default_mode = "0444"
            }
          }
        }
      }
    }
  }
}
