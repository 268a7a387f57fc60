# Provider requirements of the shared workspace module. Providers are
# configured by the calling template; this only maps the local names.
# The versions are those tests/test_terraform_schema.py checks the templates against
# (../shared/terraform/providers-schema.json). Terraform >= 1.9 for the code-server module.
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
