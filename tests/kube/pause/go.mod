// The pod sandbox's process for the node in the test loop (tests/kube/image.py packages it as
// localhost/pause:test). No dependencies: the standard library only.
module coderjobs.test/pause

go 1.24.0
