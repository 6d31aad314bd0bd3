module example.com/noret

go 1.21
