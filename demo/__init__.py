"""`./dev demo`: the whole coder-jobs lifecycle against the coderd fake and a real kube-apiserver
(demo/lifecycle.py). Nothing in jobs/ imports it."""
