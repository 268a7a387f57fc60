# Ameide Dev: a Coder workspace for github.com/ameideio/ameide.
#
# This root module is deliberately thin: template variables, provider wiring
# and one call into the vendored workspace module. The module is duplicated
# byte-for-byte in every template folder (each folder is archived and uploaded
# on its own) and tests/test_coder_templates.py keeps the copies identical.

terraform {
  required_version = ">= 1.9"

  required_providers {
    coder = {
      source  = "coder/coder"
      version = "~> 2.20"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.38"
    }
  }
}

provider "coder" {}

provider "kubernetes" {
  # In-cluster by default: the Coder provisioner runs as a pod in this cluster.
  config_path = var.use_kubeconfig == true ? "~/.kube/config" : null
}

module "workspace" {
  source = "./modules/workspace"

  template_name              = "ameide-dev"
  repo_url                   = var.repo_url
  namespace                  = var.namespace
  environment                = var.environment
  service_account_name       = var.service_account_name
  envbuilder_image           = var.envbuilder_image
  fallback_image             = var.fallback_image
  cache_repo                 = var.cache_repo
  code_server_prefix         = var.code_server_prefix
  code_server_extensions_dir = var.code_server_extensions_dir
  code_server_version        = var.code_server_version
  codex_enabled              = var.codex_enabled
  codex_version              = var.codex_version
  cpu_request                = var.cpu_request
  cpu_limit                  = var.cpu_limit
  memory_request             = var.memory_request
  memory_limit               = var.memory_limit
}
