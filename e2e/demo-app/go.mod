module vigie.dev/demo-app

go 1.19
