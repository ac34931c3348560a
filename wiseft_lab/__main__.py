from wiseft_lab.cli import main

main()
