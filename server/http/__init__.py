"""The HTTP side of the service: an OpenAI-compatible front (`/v1`) and a control plane in the shape of
hosted routers' API (`/v2/gen-ai/models/routers`), built by `server.http.api.build_http_app`. Both call
the same domain code as the gRPC servicer. (No imports here: importing a helper such as
`server.http.body` must not pull in the whole app.)"""
