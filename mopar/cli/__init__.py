"""One module per `mopar` subcommand: argument handling and what the user sees."""
