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
  default     = "https://github.com/ameideio/ameide-gitops"
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
  description = "Image envbuilder starts when the devcontainer fails to build. Empty disables the fallback."
  default     = ""
}

variable "code_server_version" {
  type        = string
  description = "code-server release installed when the devcontainer image does not ship one."
  default     = "4.96.4"
}

variable "codex_enabled" {
  type        = bool
  description = "Install the Codex CLI and VS Code extension and seed Codex auth from the slot secrets."
  default     = true
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
