from matengine.cli import main

main()
