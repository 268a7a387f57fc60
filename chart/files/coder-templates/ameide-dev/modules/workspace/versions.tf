# Provider requirements of the shared workspace module. Providers are
# configured by the calling template; this only maps the local names.
terraform {
  required_providers {
    coder = {
      source  = "coder/coder"
      version = "~> 2.4"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.32"
    }
  }
}
