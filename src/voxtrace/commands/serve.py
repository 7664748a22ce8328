"""`voxtrace serve`: the web app over an ensemble of checkpoints (page at /, JSON at POST /api/predict)."""

from __future__ import annotations


def add_arguments(parser):
    parser.add_argument("--model-dir", required=True,
                        help="folder with RUN/ckpt/*.keras and RUN/cfg/config.yaml, or an export folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--max-upload-mb", type=float, default=50, help="largest upload in MB (default: %(default)s)")
    parser.add_argument("--max-duration", type=float, default=600, help="longest clip in seconds (default: %(default)s)")
    parser.add_argument("--max-queue", type=int, default=4,
                        help="requests that may wait behind the one being scored; more get 503 (default: %(default)s)")
    parser.add_argument("--weights", nargs="+", default=None, metavar="NAME=W",
                        help="per-model weights by run name or backbone name, as for `voxtrace predict`")
    parser.add_argument("--open-set", dest="open_set", action="store_true", default=None,
                        help="attribute low-confidence clips to the unknown class (default: infer.open_set.enabled)")
    parser.add_argument("--no-open-set", dest="open_set", action="store_false", help="turn open-set rejection off")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="URL",
                        help="another origin (scheme://host[:port], e.g. a reverse proxy's) allowed to call the app; "
                             "repeatable. By default only the app's own page at --host/--port and tools without an "
                             "Origin header (curl) are served")


def run(args) -> int:
    import uvicorn

    from voxtrace.serve import create_app

    app = create_app(args.model_dir, max_upload_mb=args.max_upload_mb, max_duration_s=args.max_duration,
                     max_queue=args.max_queue, host=args.host, allowed_origins=args.allow_origin,
                     weights=args.weights, open_set=args.open_set)
    print(f"voxtrace serve: http://{args.host}:{args.port}/ ({app.state.attributor.num_checkpoints} checkpoint(s))")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
