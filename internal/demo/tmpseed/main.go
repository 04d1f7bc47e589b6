package main
import ("context";"database/sql";"log";"time";"dialsync/internal/demo";_ "github.com/go-mysql-org/go-mysql/driver")
func main(){
	a,_:=sql.Open("mysql","root@127.0.0.1:3306")
	a.Exec("DROP DATABASE IF EXISTS scratch_lookup_perf"); a.Exec("CREATE DATABASE scratch_lookup_perf")
	db,_:=sql.Open("mysql","root@127.0.0.1:3306/scratch_lookup_perf")
	ctx:=context.Background()
	if err:=demo.CreateSchema(ctx,db);err!=nil{log.Fatal(err)}
	s:=time.Now()
	if err:=demo.Seed(ctx,db,demo.DefaultSize);err!=nil{log.Fatal(err)}
	log.Print(time.Since(s))
}
