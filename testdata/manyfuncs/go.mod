module example.com/manyfuncs

go 1.21
