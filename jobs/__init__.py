"""coder-jobs: lifecycle and recovery jobs for a self-hosted Coder CE deployment."""

__version__ = "0.1.0"
