"""Commands run as function calls (`voxtrace.cli.command_args`) get exactly what their command line gives."""

import pytest

from voxtrace.cli import COMMANDS, _parser_for, command_args

REQUIRED = {  # the required arguments of each command, as values and as a command line
    "predict": ({"model_dir": "m", "infer_path": ["a"]}, ["--model-dir", "m", "--infer-path", "a"]),
    "evaluate": ({"pred": "p.csv"}, ["--pred", "p.csv"]),
    "serve": ({"model_dir": "m"}, ["--model-dir", "m"]),
    "export": ({"model_dir": "m", "format": "onnx"}, ["--model-dir", "m", "--format", "onnx"]),
    "explain": ({"model_dir": "m", "files": ["a.wav"]}, ["--model-dir", "m", "a.wav"]),
}


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_command_args_equal_the_parsed_command_line(verb):
    values, argv = REQUIRED.get(verb, ({}, []))
    parser = _parser_for(verb)
    required = sorted(a.dest for a in parser._actions if a.required)
    assert required == sorted(values), f"update REQUIRED for {verb}: it requires {required}"
    assert vars(command_args(verb, **values)) == vars(parser.parse_args(argv))


def test_unknown_or_missing_arguments_are_refused_by_name():
    with pytest.raises(TypeError, match=r"unknown arguments \['sett'\]"):
        command_args("train", sett=["a=b"])
    with pytest.raises(TypeError, match=r"missing required \['model_dir'"):
        command_args("predict")


def test_progress_goes_to_stdout_once_however_the_cli_module_was_loaded(capsys):
    """`python -m voxtrace.cli` loads the module twice (as __main__ and as voxtrace.cli): still one console
    handler, so each progress line is printed once, on stdout; warnings go to stderr."""
    import logging
    import runpy

    import voxtrace.cli

    voxtrace.cli.configure_logging()
    runpy.run_path(voxtrace.cli.__file__, run_name="second_copy")["configure_logging"]()
    logging.getLogger("voxtrace.recipes.stages").info("[run] stage")
    logging.getLogger("voxtrace.recipes.stages").warning("careful")
    captured = capsys.readouterr()
    assert captured.out.count("[run] stage") == 1 and "careful" not in captured.out
