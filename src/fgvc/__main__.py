from fgvc.cli import main_exit

main_exit()
