# Inputs of the shared workspace module. None has a default on purpose: the
# template variables in the calling root module are the single source of
# defaults, and every caller passes every input.

variable "template_name" {
  type        = string
  description = "Coder template name, used for the com.coder.template.name label."
}

variable "repo_url" {
  type        = string
  description = "Git repository envbuilder clones."
}

variable "namespace" {
  type        = string
  description = "Namespace the workspace pod runs in."
}

variable "environment" {
  type        = string
  description = "Ameide environment name (AMEIDE_ENVIRONMENT)."
}

variable "service_account_name" {
  type        = string
  description = "Service account of the workspace pod (managed by the Helm chart)."
}

variable "envbuilder_image" {
  type        = string
  description = "envbuilder image pinned by digest."
}

variable "fallback_image" {
  type        = string
  description = "envbuilder fallback image pinned by digest; empty disables it."
}

variable "cache_repo" {
  type        = string
  description = "envbuilder layer cache repository; empty = no cache."
}

variable "code_server_prefix" {
  type        = string
  description = "Prefix of the image's code-server (<prefix>/bin/code-server)."
}

variable "code_server_extensions_dir" {
  type        = string
  description = "Extensions directory of the image's code-server (holds openai.chatgpt)."
}

variable "code_server_version" {
  type        = string
  description = "code-server version the module would install if the image lacked it."
}

variable "codex_version" {
  type        = string
  description = "Codex CLI release (GitHub rust-v<version>) downloaded when the image lacks codex."
}

variable "codex_enabled" {
  type        = bool
  description = "Whether Codex scripts and auth slot volumes are added."
}

variable "cpu_request" {
  type        = string
  description = "CPU request of the workspace container."
}

variable "cpu_limit" {
  type        = string
  description = "CPU limit of the workspace container."
}

variable "memory_request" {
  type        = string
  description = "Memory request of the workspace container."
}

variable "memory_limit" {
  type        = string
  description = "Memory limit of the workspace container."
}
