import sys

if sys.argv[1:2] == ["serve"]:  # a stdio `serve` answers its opening requests before the heavy imports
    from mcpgw.prestart.preserver import begin

    begin(sys.argv[1:])

from mcpgw.cli import main

main()
