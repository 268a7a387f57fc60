# Template variables. Every one of them has a default: Coder refuses to
# provision a template version with required variables that have no value
# (REQUIRED_TEMPLATE_VARIABLES). Per-environment overrides are sent by the
# republisher from coder-template.yaml.

variable "use_kubeconfig" {
  type        = bool
  description = "Use the Coder host's ~/.kube/config instead of in-cluster credentials."
  default     = false
}

variable "namespace" {
  type        = string
  description = "Namespace the workspace pods run in (created by the Helm chart)."
  default     = "coder-workspaces"
}

variable "environment" {
  type        = string
  description = "Ameide environment the workspace belongs to (exported as AMEIDE_ENVIRONMENT)."
  default     = "dev"
}

variable "service_account_name" {
  type        = string
  description = "Namespace-scoped service account for workspace pods (created by the Helm chart, not by this template)."
  default     = "coder-workspace"
}

variable "repo_url" {
  type        = string
  description = "Git repository envbuilder clones; its .devcontainer/coder defines the workspace image."
  default     = "https://github.com/ameideio/ameide"
}

variable "envbuilder_image" {
  type        = string
  description = "envbuilder image, pinned by digest."
  default     = "ghcr.io/coder/envbuilder@sha256:b34ade2fb90a8536df76e7a15c6dd8c6352d0ae835a187b13467fa0c8a71e280"

  validation {
    condition     = can(regex("@sha256:[0-9a-f]{64}$", var.envbuilder_image))
    error_message = "envbuilder_image must be pinned by digest (<image>@sha256:<64 hex>)."
  }
}

variable "fallback_image" {
  type        = string
  description = "Image envbuilder starts when the devcontainer fails to build, so the developer can get in and fix it (instead of a pod restarting in a loop). Pinned by digest; empty disables the fallback."
  # Microsoft's devcontainer base (Ubuntu 24.04): has the curl the agent download needs, and
  # mcr.microsoft.com is in every environment's registry allowlist.
  default = "mcr.microsoft.com/devcontainers/base:ubuntu@sha256:4bcb1b466771b1ba1ea110e2a27daea2f6093f9527fb75ee59703ec89b5561cb"

  validation {
    condition     = var.fallback_image == "" || can(regex("@sha256:[0-9a-f]{64}$", var.fallback_image))
    error_message = "fallback_image must be empty or pinned by digest (<image>@sha256:<64 hex>)."
  }
}

variable "cache_repo" {
  type        = string
  description = "envbuilder layer cache (ENVBUILDER_CACHE_REPO), e.g. registry.example.com/ameide/envbuilder-cache. Empty (the default) = no cache: every start builds the devcontainer from its base image (chart/README.md, caching decision). A registry here also needs push credentials and an egress rule."
  default     = ""
}

variable "code_server_prefix" {
  type        = string
  description = "Where the devcontainer image ships code-server: <prefix>/bin/code-server. /usr is where the code-server .deb (and so its devcontainer feature on Debian/Ubuntu) puts it."
  default     = "/usr"
}

variable "code_server_extensions_dir" {
  type        = string
  description = "code-server extensions directory in the devcontainer image, holding openai.chatgpt (outside the home, which is an emptyDir)."
  default     = "/usr/local/share/code-server/extensions"
}

variable "code_server_version" {
  type        = string
  description = "code-server release the module installs only if the image lacks one and the egress policy lets it (it does not in dev, staging, production)."
  default     = "4.96.4"
}

variable "codex_enabled" {
  type        = bool
  description = "Codex CLI, the openai.chatgpt extension and Codex auth from the slot secrets. Off by default, like the chart's workspaces.codex.enabled (which also opens OpenAI egress); the chart sends its value."
  default     = false
}

variable "codex_version" {
  type        = string
  description = "Codex CLI release downloaded from GitHub (rust-v<version>) when the image has no codex."
  default     = "0.101.0"
}

variable "cpu_request" {
  type        = string
  description = "CPU request of the workspace container."
  default     = "1"
}

variable "cpu_limit" {
  type        = string
  description = "CPU limit of the workspace container."
  default     = "4"
}

variable "memory_request" {
  type        = string
  description = "Memory request of the workspace container."
  default     = "4Gi"
}

variable "memory_limit" {
  type        = string
  description = "Memory limit of the workspace container."
  default     = "8Gi"
}
