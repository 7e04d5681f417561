"""The `servicegroup serve` daemon: HTTP API and Prometheus metrics over ServiceGroup.

Import `servicegroup.server.app` for `serve()` and `create_app()`; this
package itself stays import-light so the CLI can load it lazily.
"""
