"""Recovery (docs/dev/contracts.md, "Recovery (issue 8)"): the controller
decides (policy.py, its state in the store) and acts through one more sink,
``recovery`` (sink.py), with an executor per mode (libvirt.py: the compute
agent resets or destroys the domain; nova.py: Nova's API).

Kept free of imports here: the store imports policy.py, and policy.py must
not pull in the sink's dependencies.
"""
